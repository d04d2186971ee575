"""download_osie / download_salicon with urllib mocked: never touches the network."""
import hashlib
import io
import urllib.error
import urllib.request
import zipfile

import numpy as np
import pytest
import scipy.io
from PIL import Image

from datasets import download
from datasets.osie import OSIEDataset

PREFIX = "predicting-human-gaze-beyond-pixels-master/"


def _fake_archive(tmp_path):
    """A GitHub-style archive of the OSIE repository: one top-level folder, code and data."""
    fix = np.empty((1, 1), dtype=object)
    subj = np.empty((1, 1), dtype=object)
    subj[0, 0] = {
        "fix_x": np.array([[3.0, 5.5]]),
        "fix_y": np.array([[2.0, 4.5]]),
        "fix_duration": np.array([[100, 200]], np.uint16),
    }
    fix[0, 0] = {"img": "1001.jpg", "subjects": subj}
    scipy.io.savemat(str(tmp_path / "fixations.mat"), {"fixations": fix})
    mat_bytes = (tmp_path / "fixations.mat").read_bytes()
    jpg = io.BytesIO()
    Image.fromarray(np.full((8, 10, 3), 128, np.uint8)).save(jpg, format="JPEG")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(PREFIX, "")
        zf.writestr(PREFIX + "README.md", "OSIE")
        zf.writestr(PREFIX + "LICENSE", "MIT")
        zf.writestr(PREFIX + "src/dataset/computeFixationMaps.m", "% code")
        zf.writestr(PREFIX + "data/stimuli/1001.jpg", jpg.getvalue())
        zf.writestr(PREFIX + "data/eye/fixations.mat", mat_bytes)
        zf.writestr(PREFIX + "../evil.txt", "zip slip")
    return buf.getvalue(), hashlib.md5(mat_bytes).hexdigest()


class _Server:
    """Stands in for urllib.request.urlopen; records the URLs asked for."""

    def __init__(self, payload=None, error=None):
        self.payload, self.error, self.urls = payload, error, []

    def __call__(self, url, timeout=None):
        self.urls.append(url)
        if self.error is not None:
            raise self.error
        return io.BytesIO(self.payload)


@pytest.fixture
def archive(tmp_path, monkeypatch):
    payload, md5 = _fake_archive(tmp_path)
    monkeypatch.setattr(download, "OSIE_FIXATIONS_MD5", md5)
    return payload


def test_download_osie_installs_repo_layout(tmp_path, monkeypatch, archive):
    server = _Server(archive)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    root = download.download_osie(tmp_path / "cache")
    assert root == tmp_path / "cache" / "osie"
    assert server.urls == [download.OSIE_URL]
    assert "NUS-VIP/predicting-human-gaze-beyond-pixels" in download.OSIE_URL
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == ["LICENSE", "README.md", "data/eye/fixations.mat", "data/stimuli/1001.jpg"]
    assert not (tmp_path / "cache" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["osie"]  # no temp folder left
    s = OSIEDataset(root, regions="none")[0]
    assert s.image.shape == (8, 10, 3) and s.fixation_map.sum() == 2


def test_cache_is_reused_and_force_downloads(tmp_path, monkeypatch, archive):
    monkeypatch.setattr(urllib.request, "urlopen", _Server(archive))
    root = download.download_osie(tmp_path)
    offline = _Server(error=AssertionError("the cache should have been used"))
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert download.download_osie(tmp_path) == root and offline.urls == []
    again = _Server(archive)
    monkeypatch.setattr(urllib.request, "urlopen", again)
    assert download.download_osie(tmp_path, force=True) == root and len(again.urls) == 1


def test_default_data_dir_env(tmp_path, monkeypatch, archive):
    monkeypatch.setenv(download.DATA_ENV, str(tmp_path / "env"))
    assert download.default_data_dir() == tmp_path / "env"
    monkeypatch.setattr(urllib.request, "urlopen", _Server(archive))
    assert download.download_osie() == tmp_path / "env" / "osie"
    monkeypatch.delenv(download.DATA_ENV)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert download.default_data_dir() == tmp_path / "home" / ".cache" / "saliency-dissect"


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
        TimeoutError("timed out"),
        OSError("Network is unreachable"),
    ],
)
def test_no_network_is_one_clear_line(tmp_path, monkeypatch, error):
    monkeypatch.setattr(urllib.request, "urlopen", _Server(error=error))
    with pytest.raises(ConnectionError, match="could not download https://github.com/NUS-VIP") as info:
        download.download_osie(tmp_path)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "osie").exists() and list(tmp_path.iterdir()) == []


def test_checksum_mismatch_installs_nothing(tmp_path, monkeypatch, archive):
    monkeypatch.setattr(download, "OSIE_FIXATIONS_MD5", "0" * 32)
    monkeypatch.setattr(urllib.request, "urlopen", _Server(archive))
    with pytest.raises(ValueError, match="expected 0{32}"):
        download.download_osie(tmp_path)
    assert not (tmp_path / "osie").exists()


def test_bad_archives(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, "urlopen", _Server(b"<html>rate limited</html>"))
    with pytest.raises(ValueError, match="not a zip archive"):
        download.download_osie(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(PREFIX + "README.md", "moved")
    monkeypatch.setattr(urllib.request, "urlopen", _Server(buf.getvalue()))
    with pytest.raises(ValueError, match="lacks data/eye/fixations.mat"):
        download.download_osie(tmp_path)


def test_download_salicon_explains(tmp_path):
    match = "registration required.*salicon.net.*fixations/\\{train,val\\}/\\*.mat"
    with pytest.raises(FileNotFoundError, match=match):
        download.download_salicon(tmp_path)
    (tmp_path / "salicon" / "images").mkdir(parents=True)
    (tmp_path / "salicon" / "fixations").mkdir()
    assert download.download_salicon(tmp_path) == tmp_path / "salicon"


def _user_export(root):
    """A user's OSIE-SR export and notes, kept where the docs say to put them."""
    for sub in ("SegmentationObject", "SegmentationClass"):
        (root / sub).mkdir(parents=True)
        np.save(root / sub / "1001.npy", np.ones((8, 10), np.int32))
    (root / "data" / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "data" / "notes.txt").write_text("mine")
    return ["SegmentationClass/1001.npy", "SegmentationObject/1001.npy", "data/notes.txt"]


@pytest.mark.parametrize("force", [False, True])
def test_download_never_deletes_a_users_files(tmp_path, monkeypatch, archive, force):
    cache = tmp_path / "cache"
    root = cache / "osie"
    if force:  # a complete cache, downloaded again on purpose
        monkeypatch.setattr(urllib.request, "urlopen", _Server(archive))
        download.download_osie(cache)
    else:  # an incomplete cache: a stale fixations.mat
        (root / "data" / "eye").mkdir(parents=True)
        (root / "data" / "eye" / "fixations.mat").write_bytes(b"old")
    mine = _user_export(root)
    server = _Server(archive)
    monkeypatch.setattr(urllib.request, "urlopen", server)
    assert download.download_osie(cache, force=force) == root and len(server.urls) == 1
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert set(mine) <= set(files)
    assert set(files) - set(mine) == {"LICENSE", "README.md", "data/eye/fixations.mat", "data/stimuli/1001.jpg"}
    assert (root / "data" / "notes.txt").read_text() == "mine"
    assert np.load(root / "SegmentationObject" / "1001.npy").sum() == 80
    assert download._md5(root / "data" / "eye" / "fixations.mat") == download.OSIE_FIXATIONS_MD5
    assert [p.name for p in cache.iterdir()] == ["osie"]  # no temp folder left
    # The export is read as OSIE-SR straight from the cache.
    assert OSIEDataset(root).regions == "sr"


def test_failed_download_keeps_the_old_cache(tmp_path, monkeypatch, archive):
    monkeypatch.setattr(urllib.request, "urlopen", _Server(archive))
    root = download.download_osie(tmp_path)
    mine = _user_export(root)
    monkeypatch.setattr(urllib.request, "urlopen", _Server(error=OSError("Network is unreachable")))
    with pytest.raises(ConnectionError):
        download.download_osie(tmp_path, force=True)
    assert download.cached_osie(tmp_path) == root and set(mine) <= {
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()
    }


def test_load_dataset_osie_without_root_uses_the_cache(tmp_path, monkeypatch, archive):
    from datasets import load_dataset

    monkeypatch.setenv(download.DATA_ENV, str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="needs --data-root .* run `python cli.py download osie`") as info:
        load_dataset("osie")
    assert str(tmp_path / "cache" / "osie") in str(info.value)
    assert download.cached_osie() is None
    monkeypatch.setattr(urllib.request, "urlopen", _Server(archive))
    root = download.download_osie()
    assert download.cached_osie() == root
    ds = load_dataset("osie", regions="none")
    assert ds.root == root and len(ds) == 1
    with pytest.raises(ValueError, match="does not take option\\(s\\) split; it takes regions, sr_root"):
        load_dataset("osie", split="val")
