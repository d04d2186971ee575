"""Studies by kind: how ``merge`` finds the study whose shards a folder holds.

The pass core never imports a study by name; each study registers itself
(:func:`register`, a class decorator) when its module is imported, and a shard folder records
its study's ``kind``.
"""
from __future__ import annotations

from dissect.runner.study import Study

__all__ = ["register", "study_class", "kinds"]

_STUDIES: dict[str, type[Study]] = {}


def register(cls: type[Study]) -> type[Study]:
    """Class decorator: make ``cls`` the study of kind ``cls.kind``."""
    if not cls.kind:
        raise ValueError(f"{cls.__name__} has no kind: set the class attribute kind = '...'")
    _STUDIES[cls.kind] = cls
    return cls


def study_class(kind: str) -> type[Study]:
    """The registered study of ``kind``.

    Raises:
        ValueError: no study of that kind is registered.
    """
    try:
        return _STUDIES[kind]
    except KeyError:
        known = ", ".join(sorted(_STUDIES)) or "none"
        raise ValueError(f"cannot merge {kind!r} shards: no study of that kind is known here (known: {known}); "
                         "import the module that defines it first") from None


def kinds() -> list[str]:
    """The kinds registered so far."""
    return sorted(_STUDIES)
