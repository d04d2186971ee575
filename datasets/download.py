"""Fetch the public gaze datasets into a local cache.

The cache folder is ``data_dir`` if given, else ``$SALIENCY_DISSECT_DATA``, else
``~/.cache/saliency-dissect``.

* OSIE (MIT licence) comes from the archive of the default branch of the public repository
  NUS-VIP/predicting-human-gaze-beyond-pixels. Only ``data/stimuli/*``, ``data/eye/fixations.mat``
  and the licence/readme are kept, in the repository layout that ``OSIEDataset`` reads:
  ``<data_dir>/osie/data/stimuli/*.jpg`` and ``<data_dir>/osie/data/eye/fixations.mat``.
  ``fixations.mat`` must have md5 ``8efdf6fe66f38b6e70f854c7ff45aa70`` (the checksum pysaliency
  verifies too). A complete cache is reused without touching the network. A (re-)download
  replaces only the files the archive holds; anything else in ``<data_dir>/osie`` (e.g. He et al.'s
  OSIE-SR export, ``SegmentationObject/`` and ``SegmentationClass/``, put there as the OSIE docs
  suggest) is never deleted or overwritten.
* SALICON sits behind a registration page, so it cannot be fetched here: ``download_salicon``
  checks the cache and otherwise says where to get it and how to lay it out.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

__all__ = [
    "OSIE_URL",
    "OSIE_FIXATIONS_MD5",
    "DATA_ENV",
    "default_data_dir",
    "cached_osie",
    "download_osie",
    "download_salicon",
]

OSIE_URL = "https://github.com/NUS-VIP/predicting-human-gaze-beyond-pixels/archive/HEAD.zip"
OSIE_FIXATIONS_MD5 = "8efdf6fe66f38b6e70f854c7ff45aa70"
DATA_ENV = "SALIENCY_DISSECT_DATA"
_OSIE_KEEP_FILES = ("data/eye/fixations.mat", "LICENSE", "README.md")
_OSIE_KEEP_DIRS = ("data/stimuli/",)
_TIMEOUT_S = 60


def default_data_dir() -> Path:
    """``$SALIENCY_DISSECT_DATA`` if set, else ``~/.cache/saliency-dissect``."""
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "saliency-dissect"


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _osie_complete(root: Path) -> bool:
    fix = root / "data" / "eye" / "fixations.mat"
    stimuli = root / "data" / "stimuli"
    return fix.is_file() and stimuli.is_dir() and any(stimuli.glob("*.jpg")) and _md5(fix) == OSIE_FIXATIONS_MD5


def cached_osie(data_dir: str | Path | None = None) -> Path | None:
    """``<data_dir>/osie`` if it holds a complete, verified download, else ``None`` (no network).

    Args:
        data_dir: cache folder (default: :func:`default_data_dir`).
    """
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    root = data_dir / "osie"
    return root if root.is_dir() and _osie_complete(root) else None


def _fetch(url: str, dest: Path) -> None:
    """Stream ``url`` to ``dest``; network failures become one-line ConnectionErrors."""
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp, open(dest, "wb") as out:
            shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConnectionError(
            f"could not download {url} ({reason}); check the network, or fetch the archive by hand and "
            "pass its unpacked folder to OSIEDataset(root)"
        ) from None


def _extract_osie(archive: Path, dest: Path) -> int:
    """Copy the kept members of the GitHub archive (one top-level folder) into ``dest``; count them."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise ValueError(f"the OSIE download is not a zip archive; try again later ({OSIE_URL})") from None
    n = 0
    with zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename).parts
            if info.is_dir() or len(parts) < 2:
                continue
            rel = "/".join(parts[1:])  # drop GitHub's "<repo>-<ref>/" prefix
            if ".." in parts or not (rel in _OSIE_KEEP_FILES or any(rel.startswith(d) for d in _OSIE_KEEP_DIRS)):
                continue
            target = dest.joinpath(*parts[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            n += 1
    return n


def download_osie(data_dir: str | Path | None = None, *, force: bool = False) -> Path:
    """Download OSIE (stimuli + fixations) into ``<data_dir>/osie`` unless already cached.

    Args:
        data_dir: cache folder (default: :func:`default_data_dir`).
        force: download again even if a verified copy exists (only the downloaded files are
            replaced; other files in ``<data_dir>/osie`` are kept).

    Returns:
        The OSIE root, to pass to ``OSIEDataset(root)``.

    Raises:
        ConnectionError: no network / the download failed (one line, with the URL).
        ValueError: the archive is not a zip, lacks ``data/eye/fixations.mat`` or stimuli, or the
            md5 of ``fixations.mat`` is not :data:`OSIE_FIXATIONS_MD5`.
    """
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    root = data_dir / "osie"
    if not force and cached_osie(data_dir) is not None:
        return root
    data_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".osie-") as tmp:
        tmp = Path(tmp)
        archive = tmp / "osie.zip"
        _fetch(OSIE_URL, archive)
        staged = tmp / "osie"
        _extract_osie(archive, staged)
        fix = staged / "data" / "eye" / "fixations.mat"
        if not fix.is_file() or not any((staged / "data" / "stimuli").glob("*.jpg")):
            raise ValueError(f"the archive from {OSIE_URL} lacks data/eye/fixations.mat or data/stimuli/*.jpg")
        md5 = _md5(fix)
        if md5 != OSIE_FIXATIONS_MD5:
            raise ValueError(
                f"downloaded fixations.mat has md5 {md5}, expected {OSIE_FIXATIONS_MD5}; the repository "
                "changed or the download is corrupt, so it was not installed"
            )
        _install(staged, root)
    return root


def _install(staged: Path, root: Path) -> None:
    """Move every staged file to the same place under ``root``, replacing only those paths.

    Nothing else under ``root`` is touched: a user's OSIE-SR export (``SegmentationObject/``,
    ``SegmentationClass/``) or notes kept there survive a re-download. ``fixations.mat`` is the
    completeness marker (:func:`_osie_complete`), so the old one is removed first and the new one
    moved last: an interrupted install reads as incomplete and is redone next time.
    """
    if root.exists() and not root.is_dir():
        raise ValueError(f"{root} exists but is not a folder; move it away and download again")
    marker = Path("data", "eye", "fixations.mat")
    (root / marker).unlink(missing_ok=True)
    files = sorted(p.relative_to(staged) for p in staged.rglob("*") if p.is_file())
    for rel in sorted(files, key=lambda r: r == marker):  # the marker last
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Same file system (staged lives in data_dir): each file is replaced atomically.
        os.replace(staged / rel, dest)


def download_salicon(data_dir: str | Path | None = None) -> Path:
    """Return the cached SALICON root, or explain how to obtain it (it needs a registration).

    Args:
        data_dir: cache folder (default: :func:`default_data_dir`); SALICON is expected in
            ``<data_dir>/salicon``.

    Returns:
        ``<data_dir>/salicon`` when it holds ``images/`` and ``fixations/``.

    Raises:
        FileNotFoundError: SALICON is not there; the message says where to get it and the layout.
    """
    data_dir = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    root = data_dir / "salicon"
    if (root / "images").is_dir() and (root / "fixations").is_dir():
        return root
    raise FileNotFoundError(
        f"SALICON cannot be downloaded automatically (registration required): get images.zip and "
        f"fixations.zip (2017 release) from http://salicon.net/challenge-2017/ and unpack them so that "
        f"{root}/images/{{train,val}}/*.jpg and {root}/fixations/{{train,val}}/*.mat exist"
    )
