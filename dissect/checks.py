"""Argument checks shared by the library entry points: one ``ValueError``/``TypeError`` that
names the argument, instead of a raw torch, numpy or ``OverflowError`` further down."""
from __future__ import annotations

import numbers

import torch

__all__ = ["check_count", "check_seed", "check_device", "MAX_SEED"]

MAX_SEED = 2**32 - 1  # numpy's and torch's seeds both accept 0 .. 2**32 - 1


def check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; a float such as 2.5, a bool or a string is a TypeError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_seed(seed, name: str = "seed") -> int:
    """A seed in ``0 .. 2**32 - 1`` (what numpy's and torch's generators both take)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be an integer in 0 .. {MAX_SEED}, got {seed!r} ({type(seed).__name__})")
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{name} must be an integer in 0 .. {MAX_SEED}, got {seed}")
    return int(seed)


def check_device(device) -> torch.device:
    """``device`` as a :class:`torch.device` that exists on this machine.

    Raises:
        ValueError: an unknown device string, or CUDA/MPS asked for where there is none.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {device!r} is not a device torch knows ({exc}); use 'cpu' or 'cuda'") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for but no CUDA GPU is available; use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} asked for but MPS is not available; use device='cpu'")
    return dev
