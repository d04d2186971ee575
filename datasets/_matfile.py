"""Reading MATLAB files of eye-tracking datasets with one clear error per failure."""
from __future__ import annotations

from pathlib import Path

import scipy.io

__all__ = ["load_mat"]


def load_mat(path: Path, variable: str, what: str) -> dict:
    """``scipy.io.loadmat`` (squeezed, structs as objects) that must hold ``variable``.

    Args:
        path: the ``.mat`` file.
        variable: the variable the dataset's format requires.
        what: the expected file, for the message (e.g. "OSIE's fixations.mat").

    Raises:
        ValueError: not a readable MAT file, or ``variable`` missing (the message lists what is there).
    """
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # scipy raises several types for a corrupt or non-MAT file
        raise ValueError(f"{path} is not a readable MATLAB file ({exc})") from None
    if variable not in mat:
        found = ", ".join(k for k in mat if not k.startswith("__")) or "none"
        raise ValueError(f"{path} has no variable {variable!r} (found: {found}); is this {what}?")
    return mat
