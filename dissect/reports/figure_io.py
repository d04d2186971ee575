"""Figure plumbing shared by the figure modules: a private Agg figure, PNG paths, saving, map display.

Figures are drawn on their own ``matplotlib.figure.Figure`` with an Agg canvas, never through
pyplot, so nothing stays open and the global backend is untouched.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["png_path", "new_figure", "save_png", "display_map"]


def png_path(path: str | os.PathLike) -> Path:
    """Check that ``path`` ends in ``.png`` and create its folder."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figure path {str(path)!r} must end in .png (figures are written as PNG)")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def new_figure(figsize: tuple[float, float], dpi: int) -> Figure:
    """A constrained-layout figure on its own Agg canvas."""
    if len(figsize) != 2 or min(figsize) <= 0:
        raise ValueError(f"figsize must be (width, height) in inches, both > 0, got {figsize}")
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi}")
    fig = Figure(figsize=figsize, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG at its own dpi and return ``path``."""
    fig.savefig(path, format="png", dpi=fig.dpi)
    return path


def display_map(m: np.ndarray) -> np.ndarray:
    """Min-max a map for display; a constant map shows as zeros (NaN/inf drawn as 0)."""
    m = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = m.min(), m.max()
    return np.zeros_like(m) if hi == lo else (m - lo) / (hi - lo)
