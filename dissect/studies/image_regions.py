"""What dissection scores in one image: its scorable regions as pixel sets, read once per image.

A region is scored over the fixated pixels inside its mask (region NSS, He et al. 2019 eq. 1)
or over its whole mask without fixations (NMM, eq. 4); a region whose mask is empty, or (with
fixations) that no fixation hits, is skipped and counted (:func:`valid_regions`).
:class:`ImageRegions` holds what scoring needs from one image, without its pixels;
:class:`RegionBank` holds every image's, read before a run with the permutation null (each
image's unit maps are also scored against another image's regions).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from dissect.models.inputs import network_input, preprocess, warn_converted
from probes.ceiling import region_loso_nss_at

__all__ = ["valid_regions", "regions_at_fixations", "ImageRegions", "RegionBank", "null_groups", "load_batch",
           "BANK_THREADS"]


def valid_regions(sample) -> tuple[np.ndarray, int, int]:
    """Indices of the regions of ``sample`` that can be scored, and how many were skipped.

    A region is skipped when its mask covers nothing, or (on a dataset with fixations) when no
    fixation falls inside it: eq. 1 is undefined there (digest section 3).

    Returns:
        ``(keep, n_empty, n_unfixated)``.
    """
    return regions_at_fixations(sample)[:3]


def regions_at_fixations(sample):
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


class ImageRegions:
    """What scoring needs from one image, without its pixels (built by the loader or the region bank).

    ``sets[r]`` = the pixels ``(rows, cols)`` that region ``r`` of the scorable ones averages
    over (fixated pixels inside the mask, or the mask for NMM); ``fix`` = the fixated pixels or
    ``None``; ``ceiling`` = the regions' leave-one-subject-out NSS (or ``None``).
    """

    __slots__ = ("image_id", "shape", "categories", "sets", "fix", "member", "n_empty", "n_unfixated",
                 "n_clamped", "n_dropped", "n_fixations", "ceiling", "groups")

    def __init__(self, sample, ceiling_sigma: float | None) -> None:
        keep, self.n_empty, self.n_unfixated, pixels, at_fixations = regions_at_fixations(sample)
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
MAX_KEPT_INPUT_BYTES = 2 << 30
BANK_THREADS = max(1, min(4, os.cpu_count() or 1))


class RegionBank:
    """Every image's scorable regions (:class:`ImageRegions`), read before the run for the permutation null.

    With a fixed ``image_size`` and at most ``MAX_KEPT_INPUT_BYTES`` of them, the resized uint8
    network inputs are kept too, so the main pass reads nothing from the dataset again.
    """

    def __init__(self, dataset, n_images: int, image_size: int | None, ceiling_sigma, progress: bool) -> None:
        self.records: list[ImageRegions] = []
        keep_inputs = image_size is not None and n_images * image_size * image_size * 3 <= MAX_KEPT_INPUT_BYTES
        self.inputs: list[np.ndarray] | None = [] if keep_inputs else None

        def read(i: int):
            try:
                sample = dataset[i]
            except ValueError as exc:  # fail before the run, not an hour into it
                raise ValueError(f"{exc} (the permutation null reads every image's regions before the run: "
                                 "fix that image, or pass null=0 / --null 0)") from exc
            # converted before resizing, as preprocess does (a float or RGBA image would not resize as is)
            image = network_input(sample.image, image_size, i) if keep_inputs else None
            return ImageRegions(sample, ceiling_sigma), image

        # Nothing overlaps this pass, so it reads with several threads (decoding and the loaders'
        # numpy/scipy work release the GIL); results come back in image order.
        converted = []
        with ThreadPoolExecutor(BANK_THREADS, thread_name_prefix="dissect-regions") as pool:
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
        warn_converted(converted, stacklevel=4)


def null_groups(bank: RegionBank | None, permutations: np.ndarray | None, image: int, record: ImageRegions):
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


def load_batch(dataset, start: int, stop: int, image_size: int | None, bank: RegionBank | None,
                ceiling_sigma: float | None, threads: int = 1):
    """One batch's records and network input; ``threads`` > 1 reads its images in parallel.

    The first batch of a run is read with several threads: nothing else runs yet (the model
    waits for it), while later batches are read by one thread during the previous forward.
    """
    if bank is not None and bank.inputs is not None:  # read once, by the region bank
        return bank.records[start:stop], preprocess(bank.inputs[start:stop], image_size)

    def read(i: int):
        sample = dataset[i]
        return sample, (bank.records[i] if bank is not None else ImageRegions(sample, ceiling_sigma))

    if threads > 1 and stop - start > 1:
        with ThreadPoolExecutor(min(threads, stop - start), thread_name_prefix="dissect-load-first") as pool:
            read_in_order = list(pool.map(read, range(start, stop)))  # in image order
    else:
        read_in_order = [read(i) for i in range(start, stop)]
    return [r for _, r in read_in_order], preprocess([s.image for s, _ in read_in_order], image_size)
