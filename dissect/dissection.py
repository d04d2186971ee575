"""The dissection engine: score every unit of chosen layers against annotated regions.

For every image of a dataset the model runs once; each recorded layer's unit maps are scored
against the image's regions at the image's *own* resolution, with the exact closed form of
:mod:`probes.regions` (no upsampled stack is ever materialised):

* datasets with fixations: region-wise NSS, He et al. 2019 eq. 1 (``metric = "region_nss"``);
* datasets without fixations (pop-out arrays): NMM under the region mask, eq. 4 (``metric = "nmm"``).

Scores stream into a :class:`probes.aggregate.UnitScoreAccumulator` (fixed-point sums, so shards
and resumed runs merge bit-exactly); no activation outlives its batch. With ``checkpoint_dir`` the
accumulator and the number of finished images are saved atomically between batches, at most
every ``checkpoint_seconds`` seconds (default 30: a save of six VGG16 layers' null and bootstrap
state is ~90 MB, and after every batch the saves took ~10% of a run), after the last batch, and
on Ctrl-C, so ``resume=True`` continues where the run stopped and ends with the same numbers as
an uninterrupted run. Only a hard kill, or a batch that fails half-way through scoring, loses
the batches since the last save.

Permutation null (``null = P``, the definitions are in :mod:`probes.aggregate`): before the
pass, the scorable regions of every image are collected as pixel sets (fixated pixels inside
the mask with fixations; the mask itself on pop-out arrays, i.e. other arrays' target masks).
For permutation ``p`` (:func:`probes.aggregate.null_permutation`, seeded by ``(seed, p, N)``),
image ``i``'s unit maps are also scored against the regions of image ``perm_p[i]``, as extra
columns of the same region-kernel matrix (:class:`probes.regions.RegionScorer`), so the null
costs no extra forward pass. A partner of another size has its regions rescaled to this image
(pixel centres mapped to the nearest pixel; masks resized by nearest neighbour); OSIE and
pop-out images all share one size, so nothing is rescaled there. The bootstrap weights depend
on ``(seed, global image index)`` only. Both are therefore independent of batches and shards.

Human ceiling: on datasets whose fixations carry a ``subject`` column, each scored region also
gets its leave-one-subject-out region NSS (:mod:`probes.ceiling`), averaged per category into
``human_region_nss``; NaN elsewhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from datasets.base import as_rgb_uint8, first
from dissect.checks import check_count, check_device
from dissect.hooks import ActivationRecorder, CopyBuffers, unique_layers
from dissect.models import IMAGENET_MEAN, IMAGENET_STD, model_device
from dissect.reports import atomic_write_json
from dissect.shards import SHARD_FILE, shard_images
from probes.aggregate import UnitScoreAccumulator, check_dead_unit_policy, null_permutation
from probes.ceiling import region_loso_nss_at
from probes.labels import unit_labels
from probes.regions import RegionScorer
from probes.regions_torch import TorchRegionScorer

__all__ = ["DissectionResult", "run_dissection", "result_from_accumulator", "preprocess", "valid_regions"]

_PROGRESS_FILE = "progress.json"


@dataclass
class DissectionResult:
    """What :func:`run_dissection` returns.

    Attributes:
        units: long table, one row per layer x unit x category
            (``layer, unit, category, score, n_regions, dead, n_valid, ranked, p_value, q_value``).
        summary: one row per layer x category (``layer, category, top_k_mean,
            count_above_threshold, n_units, n_dead, n_regions``, then the null, bootstrap and
            ceiling columns of :meth:`probes.aggregate.UnitScoreAccumulator.summary`).
        info: run facts for ``run.json`` (metric, counts of images and skipped regions, timings).
        accumulator: the raw accumulator (merge it with another shard's).
        labels: one row per layer x unit (:func:`probes.labels.unit_labels`).
    """

    units: pd.DataFrame
    summary: pd.DataFrame
    info: dict = field(default_factory=dict)
    accumulator: UnitScoreAccumulator | None = None
    labels: pd.DataFrame | None = None


def preprocess(images: Sequence[np.ndarray], image_size: int | None = 224,
               mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> torch.Tensor:
    """Turn ``H x W x 3`` uint8 images into a normalised ``N x 3 x S x S`` batch.

    Images are resized to ``image_size x image_size`` without keeping the aspect ratio, as
    He et al. did (OSIE 800 x 600 -> 224 x 224), with PIL's bilinear filter (fixed explicitly:
    their code relied on PIL's version-dependent default). ``image_size=None`` keeps the size
    (all images must then share it). Grayscale, RGBA and float [0, 1] images are converted to
    RGB uint8 first (:func:`datasets.base.as_rgb_uint8`), with one warning saying which.
    """
    if image_size is not None:
        image_size = check_count("image_size", image_size)
    arrays, converted = [], []
    for i, img in enumerate(images):
        array, note = _network_input(img, image_size, i)
        arrays.append(array)
        if note:
            converted.append(note)
    _warn_converted(converted, stacklevel=3)
    if not arrays:
        raise ValueError("preprocess got no images")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images of different sizes {sorted(shapes)} with image_size=None; "
                         "pass image_size (e.g. 224) to resize them")
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (batch - m) / s


def _network_input(img, image_size: int | None, index: int) -> tuple[np.ndarray, str]:
    """Image ``index`` as its uint8 network input: RGB uint8 first (:func:`datasets.base.as_rgb_uint8`),
    then resized; and the conversion note (``""`` when it was already RGB uint8)."""
    img, note = as_rgb_uint8(img, f"image {index}")
    return _resized(img, image_size), f"{index} ({note})" if note else ""


def _warn_converted(converted: list[str], stacklevel: int = 2) -> None:
    """One warning listing the images :func:`_network_input` converted."""
    if converted:
        warnings.warn(f"preprocess converted {len(converted)} image(s) to RGB uint8: {', '.join(converted[:5])}"
                      + (", ..." if len(converted) > 5 else ""), UserWarning, stacklevel=stacklevel)


def _resized(img: np.ndarray, image_size: int | None) -> np.ndarray:
    """The uint8 network input of one image: resized to ``image_size`` (PIL bilinear) or as is."""
    if image_size is not None and img.shape[:2] != (image_size, image_size):
        img = np.asarray(Image.fromarray(img).resize((image_size, image_size), Image.BILINEAR))
    return img


def valid_regions(sample) -> tuple[np.ndarray, int, int]:
    """Indices of the regions of ``sample`` that can be scored, and how many were skipped.

    A region is skipped when its mask covers nothing, or (on a dataset with fixations) when no
    fixation falls inside it: eq. 1 is undefined there (digest section 3).

    Returns:
        ``(keep, n_empty, n_unfixated)``.
    """
    return _valid_regions_at_fixations(sample)[:3]


def _valid_regions_at_fixations(sample):
    """:func:`valid_regions`, plus the fixated pixels ``(ys, xs)`` (raster order) and the ``R x n``
    masks read there, or ``None`` twice without fixations (the engine reads them only once)."""
    masks = sample.masks
    if sample.fixation_map is None:
        if masks.shape[0] == 0:
            return np.zeros(0, dtype=np.int64), 0, 0, None, None
        nonempty = masks.reshape(masks.shape[0], -1).any(axis=1)
        keep = np.flatnonzero(nonempty)
        return keep, int((~nonempty).sum()), 0, None, None
    # Read the masks at the fixated pixels only (R x n, not R x H x W); a fixated region is
    # non-empty, so only the unfixated ones need a look at their whole mask.
    fix = np.asarray(sample.fixation_map)
    pixels = np.divmod(np.flatnonzero(fix), fix.shape[1])
    at_fixations = masks[:, pixels[0], pixels[1]]
    fixated = at_fixations.any(axis=1)
    nonempty = fixated.copy()
    for r in np.flatnonzero(~fixated):
        nonempty[r] = masks[r].any()
    keep = np.flatnonzero(nonempty & fixated)
    return keep, int((~nonempty).sum()), int((nonempty & ~fixated).sum()), pixels, at_fixations


def _fingerprint(layer_names, dataset, image_size, model, run_key) -> dict:
    """What must not change between an interrupted run and its resumption."""
    info = getattr(model, "dissect_info", {})
    weights = info.get("weights_detail")
    if weights is None:  # a model from outside the zoo: identify it by its parameters
        digest = hashlib.sha256()
        for name, tensor in model.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        weights = f"state_dict sha256:{digest.hexdigest()[:16]}"
    root = getattr(dataset, "root", None)
    return {
        "layers": list(layer_names),
        "dataset": getattr(dataset, "name", type(dataset).__name__),
        "dataset_root": str(Path(root).resolve()) if root is not None else None,
        "dataset_seed": getattr(dataset, "seed", None),
        "image_size": image_size,
        "model": info.get("arch", type(model).__name__),
        "weights": weights,
        **(run_key or {}),
    }


def _load_progress(checkpoint_dir: Path, fingerprint: dict, first_index: int = 0):
    progress_path = checkpoint_dir / _PROGRESS_FILE
    if not progress_path.exists():
        return None
    fix = f"delete {progress_path} to start again (CLI: --overwrite)"
    try:
        progress = json.loads(progress_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{progress_path} is not a readable progress record ({exc}); {fix}") from None
    if not isinstance(progress, dict) or not {"next_index", "state_file", "counts"} <= set(progress):
        raise ValueError(f"{progress_path} lacks next_index, state_file or counts: not a progress record; {fix}")
    state_path = checkpoint_dir / str(progress["state_file"])
    next_index = progress["next_index"]
    recorded = progress["counts"].get("n_images", 0) if isinstance(progress["counts"], dict) else None
    if (not isinstance(next_index, int) or state_path.name != f"state-{next_index:07d}.npz"
            or recorded != next_index - first_index):
        raise ValueError(f"{progress_path} says next_index={next_index!r} but its state {state_path.name} holds "
                         f"{recorded!r} images: the record was edited or mixed up; {fix}")
    if progress.get("fingerprint") != fingerprint:
        raise ValueError(
            f"{checkpoint_dir} holds a different run ({progress.get('fingerprint')}); "
            "resume with the same model, weights, layers, dataset and image size, or use a new output folder"
        )
    try:
        acc = UnitScoreAccumulator.load(state_path)
    except (OSError, EOFError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise ValueError(f"cannot read the saved state {state_path} ({type(exc).__name__}: {exc}); "
                         f"the file is truncated or damaged: {fix}") from None
    return progress, acc


def _save_progress(checkpoint_dir: Path, acc: UnitScoreAccumulator, progress: dict) -> None:
    # Each state gets a new file named by its image count; the progress record, replaced
    # atomically, names the state it belongs to. An interrupt at any point leaves a progress
    # record pointing at a complete state of the same image count.
    state_file = f"state-{progress['next_index']:07d}.npz"
    acc.save(checkpoint_dir / state_file)
    old = checkpoint_dir / _PROGRESS_FILE
    previous = json.loads(old.read_text()).get("state_file") if old.exists() else None
    atomic_write_json(old, {**progress, "state_file": state_file})
    if previous and previous != state_file:
        (checkpoint_dir / previous).unlink(missing_ok=True)


class _Prepared:
    """What scoring needs from one image, without its pixels (built by the loader or the region bank).

    ``sets[r]`` = the pixels ``(rows, cols)`` that region ``r`` of the scorable ones averages
    over (fixated pixels inside the mask, or the mask for NMM); ``fix`` = the fixated pixels or
    ``None``; ``ceiling`` = the regions' leave-one-subject-out NSS (or ``None``).
    """

    __slots__ = ("image_id", "shape", "categories", "sets", "fix", "member", "n_empty", "n_unfixated",
                 "n_clamped", "n_dropped", "n_fixations", "ceiling", "groups")

    def __init__(self, sample, ceiling_sigma: float | None) -> None:
        keep, self.n_empty, self.n_unfixated, pixels, at_fixations = _valid_regions_at_fixations(sample)
        self.image_id, self.shape = sample.image_id, tuple(sample.shape)
        self.categories = [sample.categories[k] for k in keep]
        self.n_clamped = int(sample.meta.get("n_clamped", 0))
        self.n_dropped = int(sample.meta.get("n_dropped", 0))
        self.n_fixations = int(sample.meta.get("n_fixations", 0))
        self.fix = pixels  # the fixated pixels (ys, xs), or None
        self.sets = []
        self.member = None  # region NSS: R x n, which fixated pixels each kept region holds
        if self.fix is None:  # NMM: a region averages over its whole mask
            for k in keep:
                ys, xs = np.nonzero(sample.masks[k])
                self.sets.append((ys.astype(np.int32), xs.astype(np.int32)))
        else:  # region NSS: over its fixated pixels, read from the masks at those pixels only
            fy, fx = self.fix
            self.member = at_fixations[keep]  # R x n, read by valid_regions: no copy of R x H x W
            for inside in self.member:
                self.sets.append((fy[inside].astype(np.int32), fx[inside].astype(np.int32)))
        self.ceiling = None
        if ceiling_sigma is not None and keep.size and sample.fixations is not None:
            # The kept masks read at the subjects' pixels only (no copy of R x H x W masks[keep]).
            flat = sample.masks.reshape(sample.masks.shape[0], -1)
            self.ceiling = region_loso_nss_at(sample.fixations, sample.shape, lambda px: flat[:, px][keep],
                                              keep.size, sigma=ceiling_sigma)
        # The permutation null's view: this image's regions grouped by category (first-seen order).
        self.groups: dict[str, list] = {}
        for (ys, xs), cat in zip(self.sets, self.categories):
            self.groups.setdefault(cat, []).append((ys, xs))

    @property
    def fixation_map(self):
        if self.fix is None:
            return None
        out = np.zeros(self.shape, dtype=bool)
        out[self.fix] = True
        return out

    def masks(self) -> np.ndarray:
        """``R x H x W`` masks of the scorable regions' pixel sets (the same kernels as the full masks)."""
        out = np.zeros((len(self.sets), *self.shape), dtype=bool)
        for r, (ys, xs) in enumerate(self.sets):
            out[r, ys, xs] = True
        return out

    def groups_at(self, shape: tuple[int, int]) -> dict[str, list]:
        """:attr:`groups` at another image size (pixel centres to the nearest pixel; masks by nearest neighbour)."""
        if tuple(shape) == self.shape:
            return self.groups
        (h0, w0), (h1, w1) = self.shape, shape
        out: dict[str, list] = {}
        for cat, sets in self.groups.items():
            for ys, xs in sets:
                if self.fix is not None:  # fixated pixels: map each pixel centre to this image
                    ry = np.minimum(((ys + 0.5) * h1 / h0).astype(np.int64), h1 - 1)
                    rx = np.minimum(((xs + 0.5) * w1 / w0).astype(np.int64), w1 - 1)
                else:  # masks: nearest-neighbour resize, so a region stays filled
                    dense = np.zeros((h0, w0), dtype=bool)
                    dense[ys, xs] = True
                    sy = np.minimum(((np.arange(h1) + 0.5) * h0 / h1).astype(np.int64), h0 - 1)
                    sx = np.minimum(((np.arange(w1) + 0.5) * w0 / w1).astype(np.int64), w0 - 1)
                    ry, rx = np.nonzero(dense[np.ix_(sy, sx)])
                out.setdefault(cat, []).append((ry, rx))
        return out


# Keep the network inputs of the region bank's pass (so the dataset is read once) up to this size.
_MAX_KEPT_INPUT_BYTES = 2 << 30
_BANK_THREADS = max(1, min(4, os.cpu_count() or 1))


class _RegionBank:
    """Every image's scorable regions (:class:`_Prepared`), read before the run for the permutation null.

    With a fixed ``image_size`` and at most ``_MAX_KEPT_INPUT_BYTES`` of them, the resized uint8
    network inputs are kept too, so the main pass reads nothing from the dataset again.
    """

    def __init__(self, dataset, n_images: int, image_size: int | None, ceiling_sigma, progress: bool) -> None:
        self.records: list[_Prepared] = []
        keep_inputs = image_size is not None and n_images * image_size * image_size * 3 <= _MAX_KEPT_INPUT_BYTES
        self.inputs: list[np.ndarray] | None = [] if keep_inputs else None

        def read(i: int):
            try:
                sample = dataset[i]
            except ValueError as exc:  # fail before the run, not an hour into it
                raise ValueError(f"{exc} (the permutation null reads every image's regions before the run: "
                                 "fix that image, or pass null=0 / --null 0)") from exc
            # converted before resizing, as preprocess does (a float or RGBA image would not resize as is)
            image = _network_input(sample.image, image_size, i) if keep_inputs else None
            return _Prepared(sample, ceiling_sigma), image

        # Nothing overlaps this pass, so it reads with several threads (decoding and the loaders'
        # numpy/scipy work release the GIL); results come back in image order.
        converted = []
        with ThreadPoolExecutor(_BANK_THREADS, thread_name_prefix="dissect-regions") as pool:
            try:
                for record, image in tqdm(pool.map(read, range(n_images)), total=n_images, desc="regions",
                                          unit="img", disable=not progress, dynamic_ncols=True):
                    self.records.append(record)
                    if keep_inputs:
                        self.inputs.append(image[0])
                        if image[1]:
                            converted.append(image[1])
            except BaseException:
                pool.shutdown(cancel_futures=True)  # a bad image or Ctrl-C: do not read the rest
                raise
        _warn_converted(converted, stacklevel=4)


def _null_groups(bank: _RegionBank | None, permutations: np.ndarray | None, image: int, record: _Prepared):
    """Image ``image``'s null columns: one group of pixel sets per permutation and partner category."""
    groups, cats, reps = [], [], []
    if bank is None:
        return groups, cats, reps
    for p in range(permutations.shape[0]):
        for cat, sets in bank.records[int(permutations[p, image])].groups_at(record.shape).items():
            groups.append(sets)
            cats.append(cat)
            reps.append(p)
    return groups, cats, reps


def _load_batch(dataset, start: int, stop: int, image_size: int | None, bank: _RegionBank | None,
                ceiling_sigma: float | None, threads: int = 1):
    """One batch's records and network input; ``threads`` > 1 reads its images in parallel.

    The first batch of a run is read with several threads: nothing else runs yet (the model
    waits for it), while later batches are read by one thread during the previous forward.
    """
    if bank is not None and bank.inputs is not None:  # read once, by the region bank
        return bank.records[start:stop], preprocess(bank.inputs[start:stop], image_size)

    def read(i: int):
        sample = dataset[i]
        return sample, (bank.records[i] if bank is not None else _Prepared(sample, ceiling_sigma))

    if threads > 1 and stop - start > 1:
        with ThreadPoolExecutor(min(threads, stop - start), thread_name_prefix="dissect-load-first") as pool:
            read_in_order = list(pool.map(read, range(start, stop)))  # in image order
    else:
        read_in_order = [read(i) for i in range(start, stop)]
    return [r for _, r in read_in_order], preprocess([s.image for s, _ in read_in_order], image_size)


def _score_batch(scorer: RegionScorer, records, activations: dict, layer_names, acc: UnitScoreAccumulator,
                 stop: int, settings: dict):
    """Score one batch into the run's accumulator ``acc``; return its counts.

    The caller runs one batch at a time and touches ``acc`` (checkpoints) only between batches,
    so no batch-sized accumulator is built and merged (with a bootstrap that was ~90 MB a batch
    for six VGG16 layers). A batch that fails half-way leaves ``acc`` partly updated, but the
    run then stops without saving it: the checkpoint on disk stays at the last save.
    """
    t0 = time.perf_counter()
    first = stop - len(records)
    counts = {"n_images": 0, "n_images_without_regions": 0, "n_regions_scored": 0,
              "n_regions_empty": 0, "n_regions_unfixated": 0, "n_fixations_clamped": 0, "n_fixations_dropped": 0,
              "n_fixations": 0}
    for i, rec in enumerate(records):
        counts["n_images"] += 1
        counts["n_fixations_clamped"] += rec.n_clamped
        counts["n_fixations_dropped"] += rec.n_dropped
        counts["n_fixations"] += rec.n_fixations
        counts["n_regions_empty"] += rec.n_empty
        counts["n_regions_unfixated"] += rec.n_unfixated
        # The null pairs this image's maps with another image's regions even when it has none.
        groups, null_cats, null_reps = _null_groups(settings["bank"], settings["permutations"], first + i, rec)
        if not rec.sets:
            counts["n_images_without_regions"] += 1
            if not groups:
                continue
        counts["n_regions_scored"] += len(rec.sets)
        if rec.fix is None:
            scorer.set_regions(rec.masks(), None, extra_groups=groups)
        else:  # the fixated pixels and which region holds each: no dense R x H x W masks to rebuild
            scorer.set_point_regions(rec.shape, *rec.fix, rec.member, extra_groups=groups)
        n_real, sizes = scorer.n_regions, scorer.extra_sizes
        for name in layer_names:
            # NaN marks a constant (dead) map; the dead-unit policy is applied at table time.
            # A numpy view on CPU: the float64 conversion then runs in this thread alone, never
            # in a second OpenMP team next to the forward's.
            maps = activations[name][i]
            scores = scorer.score(maps.numpy() if maps.device.type == "cpu" else maps)
            acc.add(name, scores[:, :n_real], rec.categories, image=first + i,
                    null_scores=scores[:, n_real:] if groups else None,
                    null_categories=null_cats, null_replicates=null_reps, null_sizes=sizes)
        if rec.ceiling is not None:
            acc.add_ceiling(rec.ceiling, rec.categories)
    return counts, stop, time.perf_counter() - t0


class _AllRecorded(Exception):
    """Raised by a hook once every recorded layer has run: the rest of the forward is skipped."""


@contextmanager
def _stop_when_recorded(modules):
    """Abort the forward pass as soon as every module in ``modules`` has produced its output.

    Dissection needs nothing after the deepest recorded layer (VGG16 conv5_3: pool5 and the
    classifier are skipped). Registered after the recorder's hooks, so the copies are taken
    first. Yields a function that re-arms the hooks before each forward.
    """
    pending: set[int] = set()

    def arm() -> None:
        pending.clear()
        pending.update(id(m) for m in modules)

    def hook(module, inputs, output):
        pending.discard(id(module))
        if not pending:
            raise _AllRecorded

    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield arm
    finally:
        for handle in handles:
            handle.remove()


def _check_metric(metric: str | None, sample: "_Prepared") -> str:
    if min(sample.shape) < 2:
        raise ValueError(f"image {sample.image_id!r} is {sample.shape[0]} x {sample.shape[1]} pixels: every unit map "
                         "over it is constant, so every unit would be dead; drop images smaller than 2 x 2")
    kind = "nmm" if sample.fix is None else "region_nss"  # not .fixation_map: that builds the dense map
    if metric is not None and kind != metric:
        raise ValueError(
            f"image {sample.image_id!r} {'has no' if kind == 'nmm' else 'has'} fixations while earlier images "
            f"{'had' if metric == 'region_nss' else 'had none'}: a dataset is scored either by region NSS "
            "(all images with fixations) or by NMM (none)"
        )
    return kind


def run_dissection(
    model: torch.nn.Module,
    layers,
    dataset,
    *,
    image_size: int | None = 224,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    top_k: int = 10,
    threshold: float = 1.5,
    categories: Sequence[str] | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    max_images: int | None = None,
    dead_units: str = "zero",
    run_key: dict | None = None,
    null: int = 100,
    bootstrap: int = 200,
    seed: int = 0,
    min_valid: float = 0.5,
    ceiling_sigma: float | None = 24.0,
    shard: tuple[int, int] | None = None,
    checkpoint_seconds: float = 30.0,
) -> DissectionResult:
    """Dissect ``layers`` of any ``nn.Module`` on ``dataset``.

    Args:
        model: any PyTorch model taking ``N x 3 x S x S`` ImageNet-normalised images.
        layers: a layer name (alias such as ``conv5_3``, or dotted module path), a module, or a list.
        dataset: an indexable dataset of :class:`datasets.base.Sample` (``len``, ``[i]``).
        image_size: side of the square network input (``None``: keep the images' size).
        batch_size: images per forward pass.
        device: where the model runs (``"cpu"``, ``"cuda"``, ...). On a non-CPU device the
            activations stay there and are scored there too (:mod:`probes.regions_torch`, the
            same closed form in float64 torch), so a GPU run is bound by the forward pass.
        top_k, threshold: summary statistics (He et al.: 10 and 1.5).
        categories: the categories of the tables, in order (default: the dataset's
            ``category_order`` if it has one, e.g. He et al.'s 12 for OSIE-SR, else first seen);
            a region of another category is an error.
        checkpoint_dir: folder for the resumable state (``progress.json`` naming a ``state-N.npz``).
        resume: continue from ``checkpoint_dir`` if it holds a run with the same settings.
        progress: show a tqdm progress bar.
        max_images: stop after this many images (quick looks; recorded in ``info``).
        dead_units: a unit whose map is constant on an image: ``"zero"`` (default, He et al.'s
            code: the region scores 0, so mostly-dead units cannot rank on a few regions) or
            ``"skip"`` (digest section 3: that region is left out of the unit's mean; a unit
            live on fewer than ``min_valid`` of a category's regions is not ranked).
            ``n_valid`` in the unit table counts the regions a unit was live on either way.
        run_key: anything else that identifies the run for ``resume`` (the CLI passes the
            dataset's loader options).
        null: permutations ``P`` of the permutation null (0 = off; module docstring and
            :mod:`probes.aggregate` for the definitions).
        bootstrap: bootstrap replicates ``B`` over images (0 = off).
        seed: seed of the null's permutations and the bootstrap weights.
        min_valid: with ``dead_units="skip"``, the fraction of a category's regions a unit must
            be live on to be ranked (default 0.5).
        ceiling_sigma: Gaussian sigma (px) of the leave-one-subject-out human ceiling
            (``None``: no ceiling).
        shard: ``(i, n)``: run only the i-th of n disjoint parts of the images
            (:func:`dissect.shards.shard_images`: contiguous runs of whole batches, so every
            image meets the same batch, and gets the same bits, as in a single run). Image
            indices stay global (``dataset[k]`` with the same ``k`` as a single run, so
            anything seeded per image uses the global index). ``info["shard"]`` records the
            part; with ``checkpoint_dir`` a finished shard also writes ``shard.json`` there.
            Merge the parts with :func:`dissect.shards.merge_dissections`.
        checkpoint_seconds: with ``checkpoint_dir``, the least number of seconds between two
            saves of the state (0: after every batch). The state is also saved after the last
            batch and when the run is interrupted (Ctrl-C, or an error outside scoring).

    Thread pools (set deliberately, not left to fight): the forward pass uses torch's intra-op
    pool (``torch.get_num_threads()``); scoring runs in one worker thread beside it, on arrays
    far too small to gain from threads, so numpy's BLAS is limited to 1 thread for the run
    (``threadpoolctl.threadpool_limits(1, "blas")``, restored afterwards) and the float64
    conversion of the activations happens in numpy, never in a second OpenMP team. The
    scores do not depend on the thread counts.

    Returns:
        :class:`DissectionResult`.

    Raises:
        ValueError: empty dataset, unknown layer (the message lists the valid names), a dataset
            mixing images with and without fixations, a checkpoint of a different run.
    """
    batch_size = check_count("batch_size", batch_size)
    min_valid = check_dead_unit_policy(dead_units, min_valid)
    for name, value in (("null", null), ("bootstrap", bootstrap)):
        if isinstance(value, bool) or int(value) != value or value < 0:
            raise ValueError(f"{name} must be an integer >= 0 (0 switches it off), got {value!r}")
    null, bootstrap = int(null), int(bootstrap)
    if int(top_k) < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if isinstance(checkpoint_seconds, bool) or not isinstance(checkpoint_seconds, (int, float)) \
            or not checkpoint_seconds >= 0:
        raise ValueError(f"checkpoint_seconds must be a number of seconds >= 0 (0: after every batch), "
                         f"got {checkpoint_seconds!r}")
    every_s = float(checkpoint_seconds)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold}")
    if max_images is not None:  # the first N in an order interleaving the categories (datasets.base.first)
        dataset = first(dataset, check_count("max_images", max_images))
    n_total = len(dataset)
    if n_total == 0:
        raise ValueError(f"dataset {getattr(dataset, 'name', '')!r} has no images: check the data root")
    if isinstance(layers, (str, torch.nn.Module)):
        layers = [layers]
    resolved, repeated = unique_layers(model, layers)
    if repeated:
        warnings.warn("same layer listed twice, scored once: " + ", ".join(f"{a} is {b}" for a, b in repeated),
                      UserWarning, stacklevel=2)
    layer_names = [name for name, _ in resolved]
    device = check_device(device)
    fingerprint = _fingerprint(layer_names, dataset, image_size, model, run_key)
    fingerprint["n_images"] = n_total
    if max_images is not None:  # checkpoints of the former first-N-by-index order are not resumed
        fingerprint["image_order"] = "interleaved"
    fingerprint["dead_units"] = dead_units
    fingerprint.update(null=null, bootstrap=bootstrap, seed=int(seed), ceiling_sigma=ceiling_sigma)
    first_index, end = 0, n_total  # the global image indices this call covers
    if shard is not None:
        part = shard_images(n_total, batch_size, shard)
        first_index, end = part.start, part.stop
        fingerprint["shard"] = {"index": int(shard[0]), "count": int(shard[1]), "batch_size": batch_size}
    # A dataset that knows its categories (OSIE-SR's 12, the pop-out dimensions) gets a row for
    # each of them, in its order, even where a subset has no region of one (n_regions = 0).
    acc_categories = list(categories) if categories else getattr(dataset, "category_order", None)

    acc = UnitScoreAccumulator(categories=acc_categories, n_null=null, n_bootstrap=bootstrap, seed=int(seed))
    counts: dict[str, int] = {}
    metric = None
    start = first_index
    ckpt = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if ckpt is not None:
        ckpt.mkdir(parents=True, exist_ok=True)
        if resume:
            loaded = _load_progress(ckpt, fingerprint, first_index)
            if loaded is not None:
                saved, acc = loaded
                start = int(saved["next_index"])
                counts.update(saved["counts"])
                metric = saved["metric"]

    t_bank = time.perf_counter()
    settings = {"null": null, "bootstrap": bootstrap, "seed": int(seed), "ceiling_sigma": ceiling_sigma,
                "bank": None, "permutations": None}
    if null and start < end:
        settings["bank"] = _RegionBank(dataset, n_total, image_size, ceiling_sigma, progress)
        settings["permutations"] = np.stack([null_permutation(seed, p, n_total) for p in range(null)])
    t_bank = time.perf_counter() - t_bank

    home = model_device(model)
    model.to(device)
    t_start = time.perf_counter()
    timings = {"forward": 0.0, "scoring": 0.0}
    bar = tqdm(total=end - first_index, initial=start - first_index, desc="dissect", unit="img", disable=not progress,
               dynamic_ncols=True)
    index = start

    saves = {"last": None, "through": start, "saved": start, "at": time.perf_counter()}

    def save() -> None:
        """Write the state of every batch counted in so far."""
        _save_progress(ckpt, acc, {"fingerprint": fingerprint, "next_index": saves["through"], "counts": counts,
                                   "metric": metric, "complete": saves["through"] >= end})
        saves["saved"], saves["at"] = saves["through"], time.perf_counter()

    def land(job, activations) -> None:
        """Count a scored batch in (once, also if called again); save when the interval is up."""
        batch_counts, stop, seconds = job.result()  # its scores are in acc already
        if job is not saves["last"]:  # batches land in order: only the last one can come twice
            saves["last"] = job
            if buffers is not None:  # scored: the next forward copies into this batch's memory
                buffers.give_back(activations)
            for key, value in batch_counts.items():
                counts[key] = counts.get(key, 0) + value
            timings["scoring"] += seconds
            bar.update(batch_counts["n_images"])
            saves["through"] = stop
        if ckpt is not None and saves["saved"] < stop and (
                stop >= end or time.perf_counter() - saves["at"] >= every_s):
            save()

    # A three-stage pipeline: while the model runs batch k, one worker thread scores batch k-1
    # and another loads batch k+1 (torch and numpy release the GIL in their kernels). The scoring
    # thread adds into ``acc`` one batch at a time, and the checkpoint is written only between
    # batches (after a batch is complete), so an interrupt leaves the state at a batch boundary.
    # ``scored`` holds the batch in the scoring thread until it is counted in (land).
    # On CPU the activation copies of batch k+1 reuse the memory of batch k-1 once it is scored
    # (two batches' worth in rotation; fresh memory of that size page-faults on every write).
    scored = None
    try:
        modules = [module for _, module in resolved]
        on_device = device.type != "cpu"
        buffers = None if on_device else CopyBuffers()
        with ActivationRecorder(model, layer_names, device=None if on_device else "cpu", buffers=buffers) as rec, \
                _stop_when_recorded(modules) as arm, \
                threadpool_limits(limits=1, user_api="blas"), \
                ThreadPoolExecutor(1, thread_name_prefix="dissect-load") as loader, \
                ThreadPoolExecutor(1, thread_name_prefix="dissect-score") as scorer_pool:
            scorer = RegionScorer()  # used by the single scoring thread only
            if on_device:  # kernels built by the numpy scorer, the products on the device
                scorer = TorchRegionScorer(scorer, device)
            if index < end:  # the model waits for this one: read with the bank's threads
                loading = loader.submit(_load_batch, dataset, index, min(index + batch_size, end),
                                        image_size, settings["bank"], ceiling_sigma, _BANK_THREADS)
            try:
                while index < end:
                    samples, batch = loading.result()
                    stop = index + len(samples)
                    if stop < end:
                        loading = loader.submit(_load_batch, dataset, stop, min(stop + batch_size, end),
                                                image_size, settings["bank"], ceiling_sigma)
                    for sample in samples:
                        metric = _check_metric(metric, sample)
                    t0 = time.perf_counter()
                    arm()
                    try:
                        with torch.inference_mode():
                            model(batch.to(device))
                    except _AllRecorded:
                        pass
                    timings["forward"] += time.perf_counter() - t0
                    activations = {name: rec.activations[name] for name in layer_names}
                    if scored is not None:
                        land(*scored)
                        scored = None  # counted in: nothing left for the except branch to land
                    scored = (scorer_pool.submit(_score_batch, scorer, samples, activations, layer_names, acc,
                                                 stop, settings), activations)
                    index = stop
                if scored is not None:
                    land(*scored)
                    scored = None
            except BaseException:
                # Keep the batch that was being scored when the run stopped (Ctrl-C, a bad
                # image further on) and save every batch counted in: finished work is never
                # thrown away. A batch that failed while scoring left acc partly updated: then
                # nothing is saved, and the state on disk stays at the last save.
                failed = scored is not None and scored[0].exception() is not None  # waits for it
                if scored is not None and not failed:
                    land(*scored)
                if ckpt is not None and not failed and saves["saved"] < saves["through"]:
                    save()
                raise
    finally:
        bar.close()
        model.to(home)

    info = {
        "metric": metric,
        "layers": layer_names,
        "image_size": image_size,
        "batch_size": batch_size,
        "device": str(device),
        "top_k": top_k,
        "threshold": threshold,
        "dead_units": dead_units,
        "min_valid": float(min_valid),
        "null": null,
        "bootstrap": bootstrap,
        "seed": int(seed),
        "ceiling_sigma": ceiling_sigma,
        "resumed_from_image": start,
        **counts,
        "timings_s": {"forward": round(timings["forward"], 4), "scoring": round(timings["scoring"], 4),
                      "null_regions": round(t_bank, 4),
                      "total": round(time.perf_counter() - t_start, 4)},
    }
    if max_images is not None:
        info["max_images"] = int(max_images)
    if shard is not None:
        info["shard"] = {"index": int(shard[0]), "count": int(shard[1]), "images": [first_index, end],
                         "fingerprint": fingerprint, "counts": dict(counts)}
        if ckpt is not None:
            if first_index == end:  # an empty shard (more shards than batches) still leaves its state
                save()  # next_index = end, complete
            atomic_write_json(ckpt / SHARD_FILE, {"kind": "dissect", "info": info})
    return result_from_accumulator(acc, info)


def result_from_accumulator(acc: UnitScoreAccumulator, info: dict) -> DissectionResult:
    """The tables of a finished run from its accumulator and ``info`` (``top_k``, ``threshold``, ...).

    The one place where accumulated state becomes tables: :func:`run_dissection` ends here, and
    so does :func:`dissect.shards.merge_dissections`, so merged shards give the same tables.
    """
    dead_units, min_valid = info.get("dead_units", "zero"), info.get("min_valid", 0.5)
    units = acc.unit_table(dead_units=dead_units, min_valid=min_valid)
    summary = acc.summary(top_k=info["top_k"], threshold=info["threshold"], dead_units=dead_units,
                          min_valid=min_valid)
    return DissectionResult(units=units, summary=summary, info=info, accumulator=acc, labels=unit_labels(units))


def environment_versions() -> dict:
    """Versions worth stating in a methods section."""
    import numpy
    import scipy
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "scipy": scipy.__version__, "pandas": pd.__version__}
