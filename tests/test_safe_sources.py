"""Photo sources of the SAFE training and evaluation sets: the sdist photo archive (download,
sha256 check, extraction) and the cross-check evaluation set."""

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools import photo_archives
from tools.photo_archives import Archive
from tools.safe.crosscheck_set import METHODS, VALIDATION_SOURCES, make_set
from tools.sample_photos import EVALUATION_ONLY_SOURCES, photos_of


def _archive(tmp_path: Path, sha256: str = "") -> Archive:
    """A real .tar.gz holding one PNG under pkg-1.0/data/, served as a file:// URL."""
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 77, np.uint8)).save(buf, format="PNG")
    path = tmp_path / "src" / "pkg-1.0.tar.gz"
    path.parent.mkdir()
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("pkg-1.0/data/photo.png")
        info.size = len(buf.getvalue())
        tar.addfile(info, io.BytesIO(buf.getvalue()))
    digest = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
    return Archive(filename=path.name, url=path.as_uri(), sha256=digest, folder="pkg-1.0/data",
                   files={"p_photo": "photo.png"})


def test_archive_photo_is_downloaded_checked_and_extracted(tmp_path, monkeypatch):
    monkeypatch.setenv("VFM_PHOTO_ARCHIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(photo_archives.ARCHIVES, "pkg", _archive(tmp_path))
    path = photo_archives.archive_photo("pkg", "p_photo")
    assert path == tmp_path / "cache" / "pkg" / "photo.png"
    assert np.asarray(Image.open(path)).shape == (20, 30, 3)
    assert (tmp_path / "cache" / "pkg-1.0.tar.gz").is_file()       # kept for the next photo


def test_archive_with_another_sha256_is_refused_and_not_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("VFM_PHOTO_ARCHIVE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(photo_archives.ARCHIVES, "pkg", _archive(tmp_path, sha256="0" * 64))
    with pytest.raises(ValueError, match="sha256"):
        photo_archives.archive_photo("pkg", "p_photo")
    assert not any((tmp_path / "cache").iterdir())


def test_opencv_sample_photos_are_training_photos():
    from tools.safe.synth import SPLIT_OF_SOURCE, TRAINING_SOURCES

    names = [n for _, n in photos_of(("opencv-python",))]
    assert len(names) == 26 and all(n.startswith("cv_") for n in names)
    assert SPLIT_OF_SOURCE["opencv-python"] == "train" and "opencv-python" in TRAINING_SOURCES
    assert not set(EVALUATION_ONLY_SOURCES) & set(TRAINING_SOURCES)
    assert all(SPLIT_OF_SOURCE[source] == "test" for source in EVALUATION_ONLY_SOURCES)


def test_pillow_sample_photos_are_training_photos_unlike_any_evaluation_photo():
    from tools.safe.synth import SPLIT_OF_SOURCE, TRAINING_SOURCES
    from tools.sample_photos import photo_array

    names = [n for _, n in photos_of(("Pillow",))]
    assert len(names) == 8 and all(n.startswith("pil_") for n in names)
    assert SPLIT_OF_SOURCE["Pillow"] == "train" and "Pillow" in TRAINING_SOURCES
    members = photo_archives.ARCHIVES["Pillow"].files.values()
    assert not any("hopper" in m for m in members)  # matplotlib's grace_hopper: evaluation

    def thumb(name: str) -> np.ndarray:
        """32x32 grey thumbnail, zero mean, unit norm (correlation = dot product)."""
        grey = Image.fromarray(photo_array(name)).convert("L").resize((32, 32))
        x = np.asarray(grey, np.float64).ravel()
        return (x - x.mean()) / np.linalg.norm(x - x.mean())

    evaluation = [thumb(n) for _, n in photos_of(EVALUATION_ONLY_SOURCES)]
    training = {n: thumb(n) for n in names}
    for name, t in training.items():   # not an evaluation photo, not a copy of another one
        assert max(float(t @ e) for e in evaluation) < 0.9, name
        assert max(float(t @ u) for other, u in training.items() if other != name) < 0.9, name


def test_crosscheck_set_rows_masks_and_labels(tmp_path):
    rows = make_set(tmp_path, seed=5, variants=1, sources=VALIDATION_SOURCES)
    photos = photos_of(VALIDATION_SOURCES)
    assert len(rows) == len(photos) * len(METHODS)
    assert {r["split"] for r in rows} == {"val"}
    manifest = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text()
                .splitlines()]
    assert manifest == json.loads(json.dumps(rows))
    for row in rows:
        image = Image.open(tmp_path / str(row["image"]))
        mask = np.asarray(Image.open(tmp_path / str(row["mask"])).convert("L")) > 0
        assert mask.shape == (image.height, image.width)
        if row["method"] == "natural":
            assert row["label"] == "Natural" and not mask.any()
        else:
            assert row["label"] != "Natural" and 0.02 < mask.mean() < 0.25
        if row["method"] == "splice":
            assert row["donor"] != row["source"]


def test_training_set_has_one_pass_per_geometry_each_with_its_own_stream(tmp_path):
    from tools.safe.synth import TRAINING_GEOMETRIES, make_dataset

    photos = ("astronaut", "coffee")
    rows = make_dataset(tmp_path / "both", photos=photos, crops=1, seed=4)
    per_pass = len(photos) * 6  # natural, full, copy_move, splice, blur|noise, inpaint
    assert len(TRAINING_GEOMETRIES) == 2 and len(rows) == 2 * per_pass
    assert len({r["image"] for r in rows}) == len(rows)
    small = TRAINING_GEOMETRIES[1]
    for row in rows[per_pass:]:
        assert f"_{small.tag}0_" in str(row["image"])
        with Image.open(tmp_path / "both" / str(row["image"])) as image:
            assert max(image.size) <= small.size_range[1]
    # the first pass alone is the same images: each pass draws from its own random stream
    alone = make_dataset(tmp_path / "first", photos=photos, crops=1, seed=4,
                         geometries=TRAINING_GEOMETRIES[:1])
    assert alone == rows[:per_pass]
    for row in alone:
        assert (tmp_path / "first" / str(row["image"])).read_bytes() == \
            (tmp_path / "both" / str(row["image"])).read_bytes()
