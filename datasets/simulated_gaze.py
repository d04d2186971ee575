"""Pop-out arrays viewed by *simulated* observers: an offline stand-in for eye-tracking data.

This is not human data. It exists so that every part of the toolkit that needs fixations
(region-wise NSS, the attention-vs-gaze comparison with its leave-one-subject-out ceiling) can
run, be demonstrated and be tested on a fresh clone without a download. Each simulated observer
makes ``n_fixations`` fixations; each one lands, with probability ``p_target``, near the target
(isotropic Gaussian around the target centre, ``target_spread`` px), and otherwise anywhere on
the canvas with a central bias (Gaussian around the centre, ``0.25`` of each side; points are
kept inside the canvas). Durations are drawn from a gamma distribution with OSIE's mean (214 ms).
Everything is seeded: the same seed gives the same observers.

Fixations are stored as OSIE does: 1-based pixel coordinates with one decimal.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from datasets.base import Sample
from datasets.fixations import fixation_map
from datasets.popout import PopoutDataset

__all__ = ["SimulatedGazeDataset", "simulate_observers"]


def simulate_observers(sample: Sample, *, n_subjects: int = 15, n_fixations: int = 8, p_target: float = 0.4,
                       target_spread: float = 3.0, seed: int = 0) -> Sample:
    """Return ``sample`` with simulated fixations (table and binary map) added.

    Args:
        sample: a pop-out array (its ``meta`` must hold ``target_x`` and ``target_y``, 1-based).
        n_subjects: simulated observers.
        n_fixations: fixations per observer.
        p_target: probability that a fixation lands near the target.
        target_spread: standard deviation (px) of fixations around the target centre.
        seed: seed of the draws.

    Raises:
        ValueError: a parameter out of range, or a sample without a target position.
    """
    if n_subjects < 1 or n_fixations < 1:
        raise ValueError(f"n_subjects and n_fixations must be >= 1, got {n_subjects} and {n_fixations}")
    if not 0.0 <= p_target <= 1.0:
        raise ValueError(f"p_target must be in [0, 1], got {p_target}")
    if target_spread <= 0:
        raise ValueError(f"target_spread must be > 0 px, got {target_spread}")
    if "target_x" not in sample.meta or "target_y" not in sample.meta:
        raise ValueError(f"sample {sample.image_id!r} has no target position (meta target_x/target_y)")
    h, w = sample.shape
    rng = np.random.default_rng(seed)
    n = n_subjects * n_fixations
    on_target = rng.random(n) < p_target
    x = np.where(on_target, rng.normal(sample.meta["target_x"], target_spread, n),
                 rng.normal((w + 1) / 2, 0.25 * w, n))
    y = np.where(on_target, rng.normal(sample.meta["target_y"], target_spread, n),
                 rng.normal((h + 1) / 2, 0.25 * h, n))
    # 1-based, one decimal, inside the image (OSIE's coordinates lie in [1.2, W - 0.8]).
    x = np.round(np.clip(x, 1.0, w), 1)
    y = np.round(np.clip(y, 1.0, h), 1)
    table = pd.DataFrame({
        "x": x, "y": y,
        "subject": np.repeat(np.arange(1, n_subjects + 1), n_fixations),
        "duration": np.round(rng.gamma(4.0, 214.0 / 4.0, n)),
    })
    meta = {**sample.meta, "simulated_gaze": True, "n_subjects": n_subjects, "n_fixations": n}
    return Sample(image_id=sample.image_id, image=sample.image, masks=sample.masks,
                  categories=sample.categories, fixation_map=fixation_map(x, y, (h, w)),
                  fixations=table, meta=meta)


class SimulatedGazeDataset:
    """The default pop-out arrays, each with simulated observers (see the module docstring).

    Args:
        n_per_dimension, seed, dimensions, params: as for :class:`datasets.popout.PopoutDataset`.
        **observer_options: passed to :func:`simulate_observers` (``n_subjects``, ``p_target``, ...).
    """

    name = "popout-gaze"

    def __init__(self, n_per_dimension: int = 10, seed: int = 0, **options) -> None:
        observer_keys = {"n_subjects", "n_fixations", "p_target", "target_spread"}
        self._observers = {k: options.pop(k) for k in list(options) if k in observer_keys}
        self.base = PopoutDataset(n_per_dimension=n_per_dimension, seed=seed, **options)
        self.seed = seed
        self.category_order = self.base.category_order

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Sample:
        if index < 0:
            index += len(self)
        return simulate_observers(self.base[index], seed=self.seed * 100_003 + index, **self._observers)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
