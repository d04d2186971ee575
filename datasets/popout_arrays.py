"""Synthetic pop-out search arrays with exact target masks: the generator behind :mod:`datasets.popout`.

[He19] measured pop-out on 80 hand-annotated search arrays that cannot be redistributed (digest
section 6), so we generate our own: one target among distractors on a jittered ``rows x cols`` grid,
differing from them along ONE feature dimension, with a pixel-exact mask of the target.

Rendering (``classical-saliency-and-popout.md`` section 3.2). Every item is an exact geometric shape
(an implicit ``inside(u, v)`` test). Each pixel is sampled at ``supersample x supersample`` sub-pixel
centres (default 8 x 8) and the samples are box-averaged: the per-pixel *coverage* ``alpha`` in
``[0, 1]`` is the fraction of the pixel the item covers (identical to drawing at
``supersample``-times the resolution and downsampling with PIL's BOX filter). Items never overlap (checked), so the image is the
composite ``pixel = (1 - alpha) * background + alpha * colour`` in sRGB-encoded values, rounded to
uint8 (what a box-filtered RGB rendering gives).

Sampling tolerance. Supersampling estimates each item's area, so items specified with equal ink
render with ink equal only up to the sampling error, which depends on the sub-pixel phase of the
item. Measured as max |distractor ink / target ink - 1| over seeds 0-9 at the default params
(supersample 8): <= 0.35 % for discs, bars, strokes and rings, 1.1 % for the shape dimension's
square vs discs, 3.1 % for density's 3 px dots (at supersample 4: 1.4 % and 5.2 %; 16 would give
0.35 % and 1.1 % but takes 2-3 times as long). Generating the default 80 arrays takes about
1.5-2.5 s on one CPU core.

Target mask (fixed here): the pixels whose coverage by the target is ``>= 0.5``. It is exact for
the shape the target is (no bounding box, disc or dilation), holds only the target's own ink (a
ring's hole or a dot cluster's gaps are not in it), and ``p = mask.sum() / (H * W)`` is reported
with the NMM ceiling ``sqrt((1 - p) / p)`` (He et al. 2019, eq. 4; popout notes section 4.4).

Coordinates: ``target_x, target_y`` are the centre of the target's bounding box in 1-based pixel
coordinates, the fixation convention of digest section 1 (the pixel is
``col = floor(x + 0.5) - 1``); ``target_row, target_col`` are its 0-based grid cell. Orientation is
in degrees clockwise from vertical on screen.

Layout: cell ``(r, c)`` holds one item centred at the cell centre plus a uniform offset in
``[-jitter, jitter] * cell size`` per axis; the target cell is uniform over the grid. Params are
rejected unless every item stays inside its own cell for any jitter draw (so no item overlaps
another or the canvas edge, whatever the seed). The layout
depends only on ``seed`` and the params, NOT on the dimension: arrays with the same seed have the
same target position in every dimension, so dimensions are compared at matched eccentricities.

Luminance control. Items are achromatic grey at CIELAB ``L* = item_lightness`` unless the dimension
is about colour; target and distractors have the same L* in every dimension but ``luminance``, and,
except for ``size`` (where more ink is the feature), the same ink area, hence the same mean
luminance per item. An uncontrolled red/green array pops out on luminance alone (notes section 5).

How each dimension is made (``c = params.contrast`` in ``[0, 1]``, ``s = params.item_size``; at
``c = 0`` the target equals the distractors):

============  ===========================================================================
hue           discs of diameter ``s``, isoluminant: same L* and CIELAB chroma ``chroma``;
              distractor hue angle 200 deg (teal), target ``200 - 180 c`` deg (20 deg, red, at
              ``c = 1``; the sweep passes green, yellow, orange). Equal L* is not equal
              gamma-encoded intensity: at ``c = 1`` BT.601 luma is 150 vs 174 and IKN's
              ``(r+g+b)/3`` 146 vs 178. ``isoluminance="luma601"`` instead moves the target's L*
              until its BT.601 luma equals the distractors' (defeats luma-only models).
luminance     grey discs of diameter ``s``; target L* = item L* +- 25 c, moving away from the
              background's L* (brighter on the default grey background).
orientation   grey bars ``s x s/4``; distractors vertical, target rotated ``90 c`` deg clockwise.
size          grey discs; target diameter ``s``, distractors ``s / (1 + c)`` (linear ratio 2 at
              ``c = 1``). Ink necessarily differs (area ratio ``(1 + c)^2``).
shape         grey, equal area: distractors discs of diameter ``0.8 s``; the target is the
              superellipse ``|u/a|^n + |v/a|^n <= 1`` with ``n = 2 / (1 - c)`` (a square at
              ``c = 1``), ``a`` chosen so its area equals the disc's.
curvature     grey strokes of length ``s`` and width ``s/5``; distractors straight vertical, the
              target a circular arc of the same length and width turning ``120 c`` deg (radius
              ``s / turn``), bulging right; equal area ``length * width`` exactly.
closure       grey rings of outer diameter ``s``; the target is a closed ring, distractors are
              C's with a gap of ``90 c`` deg facing right. Ink is equalised by widening the C's
              stroke: ``w_C = w * 360 / (360 - gap)``, target stroke ``w = 0.15 s``. So the
              target's stroke is thinner (``0.75 w_C`` at ``c = 1``: 3.0 vs 4.0 px at ``s = 20``),
              a second, weaker cue besides closure. It is a deliberate trade-off: a closed
              ring cannot match the C's outer size, stroke width and ink at once; keeping size
              and ink equal (luminance-driven models see equal mean luminance) costs the stroke.
density       grey 3 x 3 dot lattices, dot diameter ``0.15 s`` but at least 1.1 px (smaller dots,
              e.g. at a 64 px canvas, could leave the target mask empty); distractor spacing
              ``(s - dot) / 2`` (extent ``s``), target spacing ``(1 - c/2)`` times that (4 times
              the dot density at ``c = 1``); same dots, same ink. Items too small for separate
              dots (``s <= 5.5`` px at ``c = 1``) are refused.
conjunction   control, no single-feature pop-out: bars ``s x s/4`` in the two isoluminant hue
              colours; target = target colour, vertical; distractors (half each, seeded) =
              target colour rotated ``90 c`` deg, or distractor colour vertical.
============  ===========================================================================

The datasets over these arrays (:class:`datasets.popout.PopoutDataset`, the PNG folders of
:func:`datasets.popout.write_popout_set`) live in :mod:`datasets.popout`. This module must not
import torch (datasets never import models).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from skimage import color as skcolor

from datasets.base import Sample

__all__ = [
    "DIMENSIONS",
    "CONTROL_DIMENSIONS",
    "ALL_DIMENSIONS",
    "PopoutParams",
    "PopoutRender",
    "render_array",
    "generate_array",
    "array_seed",
    "check_dimension",
    "check_seed",
    "mask_fraction",
]

DIMENSIONS: tuple[str, ...] = (
    "hue",
    "luminance",
    "orientation",
    "size",
    "shape",
    "curvature",
    "closure",
    "density",
)
CONTROL_DIMENSIONS: tuple[str, ...] = ("conjunction",)
#: Every dimension :func:`generate_array` accepts.
ALL_DIMENSIONS: tuple[str, ...] = DIMENSIONS + CONTROL_DIMENSIONS

# Feature constants at contrast 1 (module docstring table).
_DISTRACTOR_HUE_DEG = 200.0  # CIELAB hue angle of distractors (teal)
_HUE_STEP_DEG = 180.0  # target hue = distractor hue - 180 c
_LUMINANCE_STEP = 25.0  # L* units
_ORIENTATION_STEP_DEG = 90.0
_CURVATURE_TURN_DEG = 120.0
_CLOSURE_GAP_DEG = 90.0
_BAR_WIDTH = 0.25  # fraction of item_size
_STROKE_WIDTH = 0.20  # curvature strokes, fraction of item_size
_RING_WIDTH = 0.15  # closure strokes, fraction of item_size
_DOT_DIAMETER = 0.15  # density dots, fraction of item_size
_MIN_DOT_PX = 1.1  # ... but at least 1.1 px: smaller dots may cover no pixel to >= 0.5 (empty mask)
_SHAPE_DISC = 0.80  # shape-dimension disc diameter, fraction of item_size (square fits in s)

_ISOLUMINANCE = ("cielab", "luma601")
_LUMA601 = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma weights on gamma-encoded RGB


@dataclass(frozen=True)
class PopoutParams:
    """Geometry and feature strength of a search array.

    Attributes:
        canvas: ``(H, W)`` of the image in pixels.
        grid: ``(rows, cols)``; every cell holds one item, one of them the target.
        jitter: maximum offset of an item from its cell centre, as a fraction of the cell size per
            axis (uniform in ``[-jitter, jitter]``), in ``[0, 0.5)``.
        item_size: extent of the largest item in pixels (disc diameter, bar length, ...). ``None``
            (default): ``15/28`` of the smaller cell side, ``min(H / rows, W / cols)``, i.e. 20 px
            on the default 224 px canvas with a 6 x 6 grid; items then scale with the canvas and
            the grid, and fit their cells at any jitter up to 0.2. After construction it holds the
            resolved number.
        contrast: target/distractor difference along the tested dimension, in ``[0, 1]``; 0 makes
            the target identical to the distractors (module docstring table).
        background: grey level of the background, 0..255 (128 -> L* 53.6).
        item_lightness: CIELAB L* of the items (distractors; the target too unless the dimension
            is ``luminance``), in ``[0, 100]``.
        chroma: CIELAB chroma of the ``hue`` / ``conjunction`` colours (35 keeps every hue angle
            inside the sRGB gamut at L* 60..75).
        supersample: sub-pixel samples per axis for anti-aliasing and coverage (8 -> 64 per
            pixel; see "Sampling tolerance" in the module docstring).
        isoluminance: how the ``hue`` / ``conjunction`` colours are matched: ``"cielab"`` (equal
            CIELAB L*, i.e. equal CIE luminance Y) or ``"luma601"`` (equal BT.601 luma of the
            gamma-encoded values; the target's L* then differs slightly).
    """

    canvas: tuple[int, int] = (224, 224)
    grid: tuple[int, int] = (6, 6)
    jitter: float = 0.15
    item_size: float | None = None
    contrast: float = 1.0
    background: int = 128
    item_lightness: float = 70.0
    chroma: float = 35.0
    supersample: int = 8
    isoluminance: str = "cielab"

    def __post_init__(self) -> None:
        object.__setattr__(self, "canvas", _int_pair(self.canvas, "canvas", minimum=8))
        object.__setattr__(self, "grid", _int_pair(self.grid, "grid", minimum=1))
        if self.grid[0] * self.grid[1] < 2:
            raise ValueError(f"grid must hold at least 2 cells (a target and a distractor), got {self.grid}")
        _set_float(self, "jitter", 0.0, 0.5, hi_open=True)
        if self.item_size is None:
            (h, w), (rows, cols) = self.canvas, self.grid
            # Integer numerators: the default 224 px, 6 x 6 grid gives exactly 3360 / 168 = 20.0.
            object.__setattr__(self, "item_size", min(15 * h / (28 * rows), 15 * w / (28 * cols)))
        _set_float(self, "item_size", 0.0, math.inf, lo_open=True)
        _set_float(self, "contrast", 0.0, 1.0)
        _set_float(self, "item_lightness", 0.0, 100.0)
        _set_float(self, "chroma", 0.0, 200.0)
        object.__setattr__(self, "background", _int_in(self.background, "background", 0, 255))
        object.__setattr__(self, "supersample", _int_in(self.supersample, "supersample", 1, 64))
        if self.isoluminance not in _ISOLUMINANCE:
            raise ValueError(f"isoluminance must be one of {_ISOLUMINANCE}, got {self.isoluminance!r}")


def _int_pair(value: object, name: str, minimum: int) -> tuple[int, int]:
    try:
        a, b = value  # type: ignore[misc]
        pair = (int(a), int(b))
        ok = pair == (a, b)
    except (TypeError, ValueError):
        ok = False
    if not ok or min(pair) < minimum:
        raise ValueError(f"{name} must be a pair of integers >= {minimum}, got {value!r}")
    return pair


def _int_in(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return int(value)


def _set_float(
    obj: PopoutParams, name: str, lo: float, hi: float, lo_open: bool = False, hi_open: bool = False
) -> None:
    value = getattr(obj, name)
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    bad = not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi)
    if bad:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")
    object.__setattr__(obj, name, v)


# --------------------------------------------------------------------------------------------
# Shapes: inside(u, v) tests in item-centred pixel coordinates (u right, v down), plus the
# half-extents (hx, hy) of a centred box that contains the shape (layout checks, render windows).

_Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class _Shape:
    inside: _Inside
    hx: float
    hy: float


def _disc(diameter: float) -> _Shape:
    r = diameter / 2.0
    return _Shape(lambda u, v: u * u + v * v <= r * r, r, r)


def _bar(length: float, width: float, angle_deg: float) -> _Shape:
    t = math.radians(angle_deg)
    s, c = math.sin(t), math.cos(t)

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        # Axis direction (sin t, -cos t): clockwise from vertical with y pointing down.
        along = u * s - v * c
        across = u * c + v * s
        return (np.abs(along) <= length / 2.0) & (np.abs(across) <= width / 2.0)

    hl, hw = length / 2.0, width / 2.0
    return _Shape(inside, abs(hl * s) + abs(hw * c), abs(hl * c) + abs(hw * s))


def _superellipse(area: float, inv_n: float) -> _Shape:
    """``|u/a|^n + |v/a|^n <= 1`` with ``1/n = inv_n`` in ``[0, 0.5]`` (0: square), of given area."""
    # Area = 4 a^2 Gamma(1 + 1/n)^2 / Gamma(1 + 2/n).
    a = math.sqrt(area * math.gamma(1.0 + 2.0 * inv_n) / (4.0 * math.gamma(1.0 + inv_n) ** 2))

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        x, y = np.abs(u) / a, np.abs(v) / a
        hi, lo = np.maximum(x, y), np.minimum(x, y)
        if inv_n == 0.0:
            return hi <= 1.0
        # (x^n + y^n)^(1/n) = hi * (1 + (lo/hi)^n)^(1/n), overflow-free for large n.
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 0.0)
        return hi * (1.0 + ratio ** (1.0 / inv_n)) ** inv_n <= 1.0

    return _Shape(inside, a, a)


def _arc(length: float, width: float, turn_deg: float) -> _Shape:
    """A stroke of given length and width turning ``turn_deg`` (<= 180), bulging right, bbox-centred."""
    turn = math.radians(turn_deg)
    if turn < 1e-6:
        return _bar(length, width, 0.0)
    radius = length / turn
    half = turn / 2.0
    # Centre of curvature on the -u axis so that the arc's bounding box is centred on the origin.
    xc = -radius * (1.0 + math.cos(half)) / 2.0

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        du = u - xc
        rho = np.hypot(du, v)
        phi = np.arctan2(v, du)
        return (np.abs(rho - radius) <= width / 2.0) & (np.abs(phi) <= half)

    # turn <= 180 deg: the stroke spans x in [xc + (R - w/2) cos(half), xc + R + w/2].
    hx = max(abs(xc + radius + width / 2.0), abs(xc + (radius - width / 2.0) * math.cos(half)))
    return _Shape(inside, hx, (radius + width / 2.0) * math.sin(half))


def _ring(radius: float, width: float, gap_deg: float) -> _Shape:
    """Annulus (centre-line radius, stroke width) minus a sector of ``gap_deg`` facing right."""
    half_gap = math.radians(gap_deg) / 2.0

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        ring = np.abs(np.hypot(u, v) - radius) <= width / 2.0
        if half_gap == 0.0:
            return ring
        return ring & (np.abs(np.arctan2(v, u)) >= half_gap)

    return _Shape(inside, radius + width / 2.0, radius + width / 2.0)


def _dots(spacing: float, diameter: float) -> _Shape:
    """A 3 x 3 lattice of dots."""
    r2 = (diameter / 2.0) ** 2
    offsets = [(i * spacing, j * spacing) for i in (-1, 0, 1) for j in (-1, 0, 1)]

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast_shapes(u.shape, v.shape), dtype=bool)
        for du, dv in offsets:
            out |= (u - du) ** 2 + (v - dv) ** 2 <= r2
        return out

    return _Shape(inside, spacing + diameter / 2.0, spacing + diameter / 2.0)


# --------------------------------------------------------------------------------------------
# Colours


def _lab_to_rgb(lightness: float, chroma: float = 0.0, hue_deg: float = 0.0) -> np.ndarray:
    """sRGB (float, 0..255, unrounded) of a CIELAB LCh colour (D65); ValueError if out of gamut."""
    h = math.radians(hue_deg)
    lab = np.array([[[lightness, chroma * math.cos(h), chroma * math.sin(h)]]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # out-of-gamut clipping is detected below instead
        rgb = skcolor.lab2rgb(lab)
    if np.abs(skcolor.rgb2lab(rgb) - lab).max() > 0.05:
        raise ValueError(
            f"the CIELAB colour L*={lightness:g}, C*={chroma:g}, h={hue_deg:g} deg is outside the sRGB "
            "gamut; lower chroma or move item_lightness towards 60-75"
        )
    return rgb[0, 0] * 255.0


def _hue_colours(params: PopoutParams) -> tuple[np.ndarray, np.ndarray]:
    """(distractor, target) sRGB of the isoluminant ``hue`` / ``conjunction`` colours."""
    light, chroma = params.item_lightness, params.chroma
    t_hue = _DISTRACTOR_HUE_DEG - _HUE_STEP_DEG * params.contrast
    d_rgb = _lab_to_rgb(light, chroma, _DISTRACTOR_HUE_DEG)
    if params.isoluminance == "cielab":
        return d_rgb, _lab_to_rgb(light, chroma, t_hue)
    # luma601: bisect the target's L* (luma is monotone in L* at fixed a*, b*).
    goal = float(_LUMA601 @ d_rgb)
    h = math.radians(t_hue)

    def luma(lightness: float) -> float:
        lab = np.array([[[lightness, chroma * math.cos(h), chroma * math.sin(h)]]])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(_LUMA601 @ (skcolor.lab2rgb(lab)[0, 0] * 255.0))

    lo, hi = 0.0, 100.0
    for _ in range(60):  # 100 / 2^60: far below uint8 resolution
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if luma(mid) < goal else (lo, mid)
    return d_rgb, _lab_to_rgb((lo + hi) / 2.0, chroma, t_hue)


def _lightness_of_grey(level: int) -> float:
    return float(skcolor.rgb2lab(np.full((1, 1, 3), level, dtype=np.uint8))[0, 0, 0])


# --------------------------------------------------------------------------------------------
# Layout and the per-dimension item specifications


@dataclass(frozen=True)
class _Item:
    x: float  # centre, continuous pixel-edge coordinates (pixel j covers [j, j + 1))
    y: float
    row: int
    col: int
    shape: _Shape
    rgb: np.ndarray
    is_target: bool


def _layout(seed: int, params: PopoutParams) -> tuple[np.ndarray, np.ndarray, int]:
    """Item centres (rows*cols, row-major) and the target's flat cell index; dimension-free."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    (h, w), (rows, cols) = params.canvas, params.grid
    ch, cw = h / rows, w / cols
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    offsets = rng.uniform(-params.jitter, params.jitter, size=(rows * cols, 2))
    xs = (cc.ravel() + 0.5 + offsets[:, 0]) * cw
    ys = (rr.ravel() + 0.5 + offsets[:, 1]) * ch
    target = int(rng.integers(rows * cols))
    return xs, ys, target


def _specs(
    dimension: str, seed: int, params: PopoutParams, n_items: int, target: int
) -> list[tuple[_Shape, np.ndarray]]:
    """(shape, rgb) per item for one dimension (module docstring table)."""
    s, c, light = params.item_size, params.contrast, params.item_lightness
    grey = _lab_to_rgb(light)
    distractor: tuple[_Shape, np.ndarray]
    specs: list[tuple[_Shape, np.ndarray]]

    if dimension == "hue":
        d_rgb, t_rgb = _hue_colours(params)
        distractor, tgt = (_disc(s), d_rgb), (_disc(s), t_rgb)
    elif dimension == "luminance":
        sign = 1.0 if light >= _lightness_of_grey(params.background) else -1.0
        t_light = light + sign * _LUMINANCE_STEP * c
        if not 0.0 <= t_light <= 100.0:
            raise ValueError(
                f"the luminance target would need L*={t_light:g} (item_lightness {light:g} "
                f"+- {_LUMINANCE_STEP:g} * contrast); choose item_lightness nearer 50 or a lower contrast"
            )
        distractor, tgt = (_disc(s), grey), (_disc(s), _lab_to_rgb(t_light))
    elif dimension == "orientation":
        w = _BAR_WIDTH * s
        distractor = (_bar(s, w, 0.0), grey)
        tgt = (_bar(s, w, _ORIENTATION_STEP_DEG * c), grey)
    elif dimension == "size":
        distractor, tgt = (_disc(s / (1.0 + c)), grey), (_disc(s), grey)
    elif dimension == "shape":
        d = _SHAPE_DISC * s
        area = math.pi * d * d / 4.0
        distractor = (_superellipse(area, 0.5), grey)  # n = 2: the disc
        tgt = (_superellipse(area, (1.0 - c) / 2.0), grey)
    elif dimension == "curvature":
        w = _STROKE_WIDTH * s
        distractor, tgt = (_arc(s, w, 0.0), grey), (_arc(s, w, _CURVATURE_TURN_DEG * c), grey)
    elif dimension == "closure":
        gap = _CLOSURE_GAP_DEG * c
        w = _RING_WIDTH * s
        w_c = w * 360.0 / (360.0 - gap)  # equal ink: (360 - gap)/360 * 2 pi r w_c = 2 pi r w
        radius = (s - w_c) / 2.0
        distractor, tgt = (_ring(radius, w_c, gap), grey), (_ring(radius, w, 0.0), grey)
    elif dimension == "density":
        dot = max(_DOT_DIAMETER * s, _MIN_DOT_PX)
        spacing = (s - dot) / 2.0
        if spacing * (1.0 - c / 2.0) <= dot:
            # Touching dots would merge and the target would lose ink: a silently wrong array.
            raise ValueError(
                f"item_size {s:.3g} px is too small for the density dimension (its {dot:.2g} px dots "
                "would touch); use a larger canvas (>= 64 px with a 6 x 6 grid) or a coarser grid"
            )
        distractor = (_dots(spacing, dot), grey)
        tgt = (_dots(spacing * (1.0 - c / 2.0), dot), grey)
    elif dimension == "conjunction":
        if n_items < 3:
            raise ValueError(
                "the conjunction control needs at least 3 cells (both distractor kinds); enlarge grid"
            )
        w = _BAR_WIDTH * s
        d_rgb, t_rgb = _hue_colours(params)
        tgt = (_bar(s, w, 0.0), t_rgb)
        kinds = [(_bar(s, w, _ORIENTATION_STEP_DEG * c), t_rgb), (_bar(s, w, 0.0), d_rgb)]
        # Half of the distractors of each kind (the odd one to either), assigned at random.
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
        n_d = n_items - 1
        labels = np.array([i % 2 for i in range(n_d)])
        if n_d % 2:
            labels[-1] = rng.integers(2)
        labels = rng.permutation(labels)
        specs = [kinds[k] for k in labels]
        specs.insert(target, tgt)
        return specs
    else:  # pragma: no cover - guarded by check_dimension
        raise ValueError(f"unknown dimension {dimension!r}")
    return [tgt if i == target else distractor for i in range(n_items)]


def check_dimension(dimension: object) -> str:
    """``dimension`` as a str if it is one of :data:`ALL_DIMENSIONS`; else ``ValueError`` listing them."""
    if dimension not in ALL_DIMENSIONS:
        names = ", ".join(ALL_DIMENSIONS)
        raise ValueError(f"unknown pop-out dimension {dimension!r}; choose one of {names}")
    return str(dimension)


def check_seed(seed: object) -> int:
    """``seed`` as an int if it is a non-negative integer (not a bool); else ``ValueError``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _items(dimension: str, seed: int, params: PopoutParams) -> list[_Item]:
    xs, ys, target = _layout(seed, params)
    cols = params.grid[1]
    specs = _specs(dimension, seed, params, len(xs), target)
    items = [
        _Item(float(x), float(y), i // cols, i % cols, shape, rgb, i == target)
        for i, (x, y, (shape, rgb)) in enumerate(zip(xs, ys, specs))
    ]
    _check_layout(items, params)
    return items


def _check_layout(items: Sequence[_Item], params: PopoutParams) -> None:
    """Every item must stay inside its own cell for ANY jitter draw, so no seed can fail.

    An item with half-extents ``(hx, hy)`` jittered by up to ``jitter * cell`` stays in its cell
    iff ``2 hx <= cell_w (1 - 2 jitter)`` (same for y); items in distinct cells then never overlap
    (the composite assumes it) and never leave the canvas.
    """
    (h, w), (rows, cols) = params.canvas, params.grid
    room_x, room_y = (w / cols) * (1 - 2 * params.jitter), (h / rows) * (1 - 2 * params.jitter)
    ext_x = 2 * max(it.shape.hx for it in items)
    ext_y = 2 * max(it.shape.hy for it in items)
    if ext_x > room_x or ext_y > room_y:
        raise ValueError(
            f"items up to {ext_x:.1f} x {ext_y:.1f} px do not fit the {room_x:.1f} x {room_y:.1f} px that "
            f"cells leave at jitter {params.jitter:g}; reduce item_size or jitter, or enlarge the canvas "
            "or shrink the grid"
        )


# --------------------------------------------------------------------------------------------
# Rendering


def _coverage(item: _Item, params: PopoutParams) -> tuple[slice, slice, np.ndarray]:
    """Per-pixel coverage of one item inside its bounding window (box-filtered supersampling)."""
    h, w = params.canvas
    ss, hx, hy = params.supersample, item.shape.hx, item.shape.hy
    x0, x1 = max(0, math.floor(item.x - hx) - 1), min(w, math.ceil(item.x + hx) + 1)
    y0, y1 = max(0, math.floor(item.y - hy) - 1), min(h, math.ceil(item.y + hy) + 1)
    sub = (np.arange(ss) + 0.5) / ss  # sub-pixel sample centres
    u = (np.arange(x0, x1)[:, None] + sub[None, :]).ravel() - item.x
    v = (np.arange(y0, y1)[:, None] + sub[None, :]).ravel() - item.y
    inside = item.shape.inside(u[None, :], v[:, None])
    cov = inside.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    return slice(y0, y1), slice(x0, x1), cov


@dataclass(frozen=True)
class PopoutRender:
    """A rendered array with per-pixel coverage of the target and of all distractors.

    Attributes:
        image: ``H x W x 3`` uint8 RGB.
        target_coverage: ``H x W`` float64 fraction of each pixel covered by the target.
        distractor_coverage: ``H x W`` float64 fraction covered by any distractor (GSI, MSR).
        target_cell: ``(row, col)`` of the target, 0-based.
        target_xy: target bbox centre ``(x, y)`` in 1-based pixel coordinates (digest section 1).
    """

    image: np.ndarray
    target_coverage: np.ndarray
    distractor_coverage: np.ndarray
    target_cell: tuple[int, int]
    target_xy: tuple[float, float]

    @property
    def target_mask(self) -> np.ndarray:
        """``H x W`` bool: target coverage >= 0.5 (the mask convention of this module)."""
        return self.target_coverage >= 0.5


def render_array(dimension: str, seed: int, params: PopoutParams = PopoutParams()) -> PopoutRender:
    """Render one search array (image plus target and distractor coverage).

    Args:
        dimension: one of ``DIMENSIONS + CONTROL_DIMENSIONS``.
        seed: non-negative integer; the same seed and params give identical pixels.
        params: geometry and contrast.

    Returns:
        A :class:`PopoutRender`.

    Raises:
        ValueError: unknown dimension, bad seed, items that do not fit their cells,
            colours outside the sRGB gamut, or items indistinguishable from the background.
    """
    dimension, seed = check_dimension(dimension), check_seed(seed)
    if not isinstance(params, PopoutParams):
        raise ValueError(f"params must be a PopoutParams, got {type(params).__name__}")
    h, w = params.canvas
    bg = float(params.background)
    items = _items(dimension, seed, params)
    target_cov = np.zeros((h, w))
    distractor_cov = np.zeros((h, w))
    ink = np.zeros((h, w, 3))  # sum of alpha * colour
    for it in items:
        if np.all(np.rint(it.rgb) == bg):
            raise ValueError(
                f"items of colour {np.rint(it.rgb).astype(int).tolist()} are invisible on background "
                f"{params.background}; move item_lightness away from the background's L*"
            )
        ys, xs, cov = _coverage(it, params)
        (target_cov if it.is_target else distractor_cov)[ys, xs] += cov
        ink[ys, xs] += cov[..., None] * it.rgb
    alpha = (target_cov + distractor_cov)[..., None]
    image = np.rint((1.0 - alpha) * bg + ink).clip(0, 255).astype(np.uint8)
    tgt = next(it for it in items if it.is_target)
    # Continuous edge coordinates -> 1-based pixel coordinates: pixel j's centre j + 0.5 -> j + 1.
    return PopoutRender(image, target_cov, distractor_cov, (tgt.row, tgt.col), (tgt.x + 0.5, tgt.y + 0.5))


def mask_fraction(mask: np.ndarray) -> float:
    """Fraction ``p`` of the pixels a mask covers (nonzero = on), the ``mask_fraction`` of ``meta``."""
    return float(np.count_nonzero(mask)) / float(mask.size)


def array_seed(seed: int, k: int) -> int:
    """The seed of array ``k`` of a :class:`datasets.popout.PopoutDataset` with dataset seed ``seed``.

    ``SeedSequence([seed, k])`` hashed to one 32-bit integer, so datasets with different seeds
    share no arrays (``seed + k`` would make seeds 0 and 1 share 9 of 10 arrays per dimension),
    and array ``k`` does not depend on ``n_per_dimension``.

    Raises:
        ValueError: a negative or non-integer ``seed`` or ``k``.
    """
    seed = check_seed(seed)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"array index must be a non-negative integer, got {k!r}")
    return int(np.random.SeedSequence([seed, int(k)]).generate_state(1)[0])


def generate_array(
    dimension: str, seed: int, params: PopoutParams = PopoutParams(), *, image_id: str | None = None
) -> Sample:
    """One pop-out search array as a :class:`Sample`.

    Args:
        dimension: one of ``DIMENSIONS + CONTROL_DIMENSIONS`` (module docstring table).
        seed: non-negative integer; same seed and params -> identical pixels. The layout (target
            cell, jitter) depends on the seed only, so it is shared across dimensions.
        params: geometry and contrast.
        image_id: the sample's id (default ``f"{dimension}_seed{seed}"``).

    Returns:
        Sample with ``image_id``, ``masks`` ``1 x H x W`` (target
        coverage >= 0.5), ``categories = [dimension]``, no fixations, and ``meta`` with
        ``dimension, seed, target_row, target_col`` (0-based cell), ``target_x, target_y``
        (1-based pixels), ``eccentricity`` (px from the image centre), ``mask_fraction`` p,
        ``nmm_ceiling = sqrt((1 - p) / p)`` (He et al. 2019, eq. 4 bound) and ``params``.

    Raises:
        ValueError: as :func:`render_array`, or a target that covers no pixel to >= 0.5.
    """
    r = render_array(dimension, seed, params)
    mask = r.target_mask
    p = mask_fraction(mask)
    if p == 0.0:
        raise ValueError(
            f"the {dimension} target covers no pixel to >= 50 % (item_size {params.item_size:.3g} px); use a "
            "larger canvas or a coarser grid (the default item_size follows them) or a larger item_size"
        )
    h, w = params.canvas
    tx, ty = r.target_xy
    meta = {
        "dimension": dimension,
        "seed": int(seed),
        "target_row": r.target_cell[0],
        "target_col": r.target_cell[1],
        "target_x": tx,
        "target_y": ty,
        # Image centre in 1-based coordinates is ((W + 1) / 2, (H + 1) / 2).
        "eccentricity": math.hypot(tx - (w + 1) / 2.0, ty - (h + 1) / 2.0),
        "mask_fraction": p,
        "nmm_ceiling": math.sqrt((1.0 - p) / p),
        "params": params,
    }
    sid = f"{dimension}_seed{int(seed)}" if image_id is None else str(image_id)
    return Sample(sid, r.image, mask[None], [dimension], meta=meta)
