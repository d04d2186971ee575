"""Pop-out arrays viewed by *simulated* observers: an offline stand-in for eye-tracking data.

This is not human data. It exists so that every part of the toolkit that needs fixations
(region-wise NSS, the attention-vs-gaze comparison with its leave-one-subject-out ceiling) can
run, be demonstrated and be tested on a fresh clone without a download.

Model. Each simulated observer makes ``n_fixations`` fixations. With probability ``p_target`` a
fixation lands on the target: a pixel drawn uniformly from the target mask (the union of
``sample.masks``), at its centre, plus isotropic Gaussian scatter of ``target_spread`` px. Drawing
from the mask rather than aiming at the target's bounding-box centre matters for shapes whose
centre is not on the shape (a closed ring's hole, a curved stroke's chord): every pop-out
dimension then gets a comparable share of fixations inside its mask. The default scatter, 1 px,
is below the width of the thinnest targets (3 px strokes and dots at the default item size): with
``p_target = 1`` every dimension keeps about 50-95 % of its fixations inside the mask (density,
whose mask has gaps, the fewest); at 3 px the density target would keep only about 20 %, the discs
about 75 %. Otherwise the fixation lands
anywhere, with a central bias (Gaussian around the image centre, ``0.25`` of each side).

Points that fall outside the image (``x`` outside ``[0.5, W + 0.5)`` in 1-based coordinates,
i.e. no pixel under MATLAB rounding) are **redrawn**, not clipped: clipping would pile fixations
up on the border pixels. Durations are drawn from a gamma distribution (shape 4) with OSIE's mean
fixation duration, 214 ms. Fixations are stored as OSIE does: 1-based pixel coordinates with one
decimal.

Seeding: the draws for an image come from ``np.random.SeedSequence([seed, crc32(image_id)])``, so
an array gets the same observers whatever else is in the dataset (``n_per_dimension``,
``dimensions``, its index), and different seeds give independent observers.
"""
from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from datasets.base import Sample
from datasets.fixations import fixation_map
from datasets.popout import PopoutDataset

__all__ = ["SimulatedGazeDataset", "simulate_observers", "observer_seed", "OBSERVER_OPTIONS"]

OBSERVER_OPTIONS = ("n_subjects", "n_fixations", "p_target", "target_spread")
_CENTRE_SD = 0.25  # central-bias sd, fraction of each side
_MEAN_DURATION_MS = 214.0  # OSIE's mean fixation duration
_GAMMA_SHAPE = 4.0


def observer_seed(seed: int, image_id: str) -> np.random.SeedSequence:
    """The seed sequence of one image's simulated observers: ``SeedSequence([seed, crc32(image_id)])``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.SeedSequence([int(seed), zlib.crc32(str(image_id).encode("utf-8"))])


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_observer_options(n_subjects: int = 15, n_fixations: int = 8, p_target: float = 0.4,
                            target_spread: float = 1.0) -> tuple[int, int]:
    """Validate the observer options; return ``(n_subjects, n_fixations)`` as ints."""
    n_subjects = _positive_int(n_subjects, "n_subjects")
    n_fixations = _positive_int(n_fixations, "n_fixations")
    if not 0.0 <= p_target <= 1.0:
        raise ValueError(f"p_target must be in [0, 1], got {p_target}")
    if not target_spread > 0:
        raise ValueError(f"target_spread must be > 0 px, got {target_spread}")
    return n_subjects, n_fixations


def simulate_observers(sample: Sample, *, n_subjects: int = 15, n_fixations: int = 8, p_target: float = 0.4,
                       target_spread: float = 1.0, seed: int = 0) -> Sample:
    """Return ``sample`` with simulated fixations (table and binary map) added.

    Args:
        sample: an image with at least one non-empty mask (a pop-out array: the target mask).
        n_subjects: simulated observers.
        n_fixations: fixations per observer.
        p_target: probability that a fixation lands on the target.
        target_spread: standard deviation (px) of the Gaussian scatter around the drawn mask pixel.
        seed: dataset seed; the draws use :func:`observer_seed` ``(seed, sample.image_id)``.

    Returns:
        A new :class:`Sample` with ``fixations`` (1-based ``x, y`` with one decimal, ``subject``
        1..n_subjects, ``duration`` ms), ``fixation_map`` and ``meta`` plus ``simulated_gaze=True``,
        ``n_subjects`` and ``n_fixations`` (the total).

    Raises:
        ValueError: a parameter out of range, or a sample without any mask pixel.
    """
    n_subjects, n_fixations = _check_observer_options(n_subjects, n_fixations, p_target, target_spread)
    h, w = sample.shape
    target = np.flatnonzero(sample.masks.any(axis=0))
    if target.size == 0:
        raise ValueError(f"sample {sample.image_id!r} has no mask pixel: simulated observers need a target mask")
    rng = np.random.default_rng(observer_seed(seed, sample.image_id))
    n = n_subjects * n_fixations
    on_target = rng.random(n) < p_target
    x, y = np.empty(n), np.empty(n)
    todo = np.arange(n)
    while todo.size:  # redraw the points that left the image; ends: each draw is inside with p > 0
        k = todo.size
        rows, cols = np.divmod(target[rng.integers(target.size, size=k)], w)
        # Pixel (row, col) has its centre at 1-based (col + 1, row + 1).
        xt = cols + 1.0 + rng.normal(0.0, target_spread, k)
        yt = rows + 1.0 + rng.normal(0.0, target_spread, k)
        xb = rng.normal((w + 1) / 2.0, _CENTRE_SD * w, k)
        yb = rng.normal((h + 1) / 2.0, _CENTRE_SD * h, k)
        x[todo] = np.round(np.where(on_target[todo], xt, xb), 1)
        y[todo] = np.round(np.where(on_target[todo], yt, yb), 1)
        # MATLAB rounding (floor(x + 0.5)) puts x on pixel 1..W exactly when 0.5 <= x < W + 0.5.
        inside = (x[todo] >= 0.5) & (x[todo] < w + 0.5) & (y[todo] >= 0.5) & (y[todo] < h + 0.5)
        todo = todo[~inside]
    table = pd.DataFrame({
        "x": x, "y": y,
        "subject": np.repeat(np.arange(1, n_subjects + 1), n_fixations),
        "duration": np.round(rng.gamma(_GAMMA_SHAPE, _MEAN_DURATION_MS / _GAMMA_SHAPE, n)),
    })
    meta = {**sample.meta, "simulated_gaze": True, "n_subjects": n_subjects, "n_fixations": n}
    return Sample(image_id=sample.image_id, image=sample.image, masks=sample.masks,
                  categories=sample.categories, fixation_map=fixation_map(x, y, (h, w)),
                  fixations=table, meta=meta)


class SimulatedGazeDataset:
    """The default pop-out arrays, each with simulated observers (see the module docstring).

    Args:
        n_per_dimension, seed, dimensions, params: as for :class:`datasets.popout.PopoutDataset`.
        **observer_options: :data:`OBSERVER_OPTIONS`, passed to :func:`simulate_observers`.

    Raises:
        ValueError: an option that is neither a pop-out nor an observer option (named), or bad
            values (as :class:`~datasets.popout.PopoutDataset` and :func:`simulate_observers`).
    """

    name = "popout-gaze"

    def __init__(self, n_per_dimension: int = 10, seed: int = 0, **options) -> None:
        popout_keys = {"dimensions", "params"}
        unknown = sorted(set(options) - popout_keys - set(OBSERVER_OPTIONS))
        if unknown:
            allowed = ", ".join(("n_per_dimension", "seed", *sorted(popout_keys), *OBSERVER_OPTIONS))
            raise ValueError(f"popout-gaze does not take option(s) {', '.join(unknown)}; it takes {allowed}")
        self._observers = {k: options.pop(k) for k in list(options) if k in OBSERVER_OPTIONS}
        self.base = PopoutDataset(n_per_dimension=n_per_dimension, seed=seed, **options)
        self.seed = self.base.seed
        self.category_order = self.base.category_order
        # Fail now, not at the first image, on a bad observer option.
        _check_observer_options(**self._observers)

    def __len__(self) -> int:
        return len(self.base)

    def image_groups(self) -> list[str]:
        """The dimension of every array, in index order (for :func:`datasets.base.first`)."""
        return self.base.image_groups()

    def __getitem__(self, index: int) -> Sample:
        return simulate_observers(self.base[index], seed=self.seed, **self._observers)

    def __iter__(self):
        return (self[i] for i in range(len(self)))
