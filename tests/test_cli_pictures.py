"""Pictures made by `vfm` (real servers, `vfm` as a subprocess): SAFE masks and overlays, the
PCA picture of a two-texture tile (its first component separates the two halves), and the PCA
map of a slide over its thumbnail. PNGs open and have the expected sizes."""

import base64
import io

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

from client_helpers import png, run_vfm, shared_server, write_slide
from vfm_client.pictures import footprint, overlay
from vfm_client.safe import LABELS


@pytest.fixture(scope="module")
def safe(truss_server_factory):
    return shared_server(truss_server_factory, "safe_detector")


def photo(name, size):
    from skimage import data
    return Image.fromarray(getattr(data, name)()).convert("RGB").resize(size)


def encoded(image, fmt, **kwargs):
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def test_detect_table_masks_and_overlays(safe, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    inputs = {"astronaut.png": encoded(photo("astronaut", (320, 240)), "PNG"),
              "coffee.jpg": encoded(photo("coffee", (256, 200)), "JPEG", quality=90),
              "chelsea.tiff": encoded(photo("chelsea", (200, 150)), "TIFF"),
              "broken.jpg": b"\xff\xd8\xff\xe0 not a jpeg"}
    for name, data in inputs.items():
        (folder / name).write_bytes(data)
    out = tmp_path / "detect"
    done = run_vfm(["detect", "--url", safe.url, "--retries", "1", "--out", str(out),
                    str(folder)])
    assert done.returncode == 2, done.stderr  # broken.jpg
    table = pq.read_table(out / "results.parquet")
    assert table.column_names == ["source", "label", "logprobs", "mask_path", "error"]
    rows = {r["source"].split("/")[-1]: r for r in table.to_pylist()}
    assert set(rows) == set(inputs)
    assert rows["broken.jpg"]["error"] and rows["broken.jpg"]["label"] is None
    for name in ("astronaut.png", "coffee.jpg", "chelsea.tiff"):
        row = rows[name]
        assert row["error"] is None
        logprobs = np.asarray(row["logprobs"])
        assert row["label"] == LABELS[int(np.argmax(logprobs))]
        assert abs(np.log(np.exp(logprobs).sum())) < 1e-6
        # The same image sent by hand (TIFF as PNG, as the client sends it).
        with Image.open(io.BytesIO(inputs[name])) as image:
            rgb = image.convert("RGB")
        data = inputs[name] if name != "chelsea.tiff" else encoded(rgb, "PNG")
        media = "image/jpeg" if name.endswith(".jpg") else "image/png"
        by_hand = requests.post(safe.predict_url, json={"image": {
            "mediaType": media, "data": base64.b64encode(data).decode()}}, timeout=120).json()
        np.testing.assert_allclose(logprobs, by_hand["logprobs"], rtol=0, atol=1e-6)
        server_mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(
            by_hand["localizationMask"]["data"]))).convert("L")) > 0
        mask = np.asarray(Image.open(out / row["mask_path"]))
        assert mask.shape == (rgb.height, rgb.width) and set(np.unique(mask)) <= {0, 255}
        np.testing.assert_array_equal(mask > 0, server_mask)
        tinted = np.asarray(Image.open(out / "overlays" / row["mask_path"].split("/")[-1]))
        expected = np.asarray(rgb).astype(np.float32)
        expected[server_mask] = 0.5 * expected[server_mask] + 0.5 * np.array([255, 0, 0])
        np.testing.assert_array_equal(tinted, np.round(expected).astype(np.uint8))
    assert len(list((out / "masks").glob("*.png"))) == 3
    assert len(list((out / "overlays").glob("*.png"))) == 3


def test_overlay_tints_exactly_the_mask():
    image = Image.fromarray(np.full((30, 40, 3), 100, dtype=np.uint8))
    mask = np.zeros((30, 40), dtype=bool)
    mask[5:10, 20:30] = True
    tinted = np.asarray(overlay(image, mask))
    assert tinted.shape == (30, 40, 3)
    assert (tinted[mask] == (178, 50, 50)).all() and (tinted[~mask] == 100).all()


def two_texture_tile():
    """224 x 224: vertical stripes (period one patch) on the left half, horizontal on the right;
    every patch of a half is the same pixels."""
    yy, xx = np.mgrid[0:224, 0:224]
    tile = np.zeros((224, 224, 3), np.uint8)
    tile[:, :112] = np.where(((xx % 14) < 7)[:, :112, None], (220, 120, 200), (60, 20, 90))
    tile[:, 112:] = np.where(((yy % 14) < 7)[:, 112:, None], (240, 230, 230), (150, 60, 80))
    return tile


def test_pca_picture_of_a_two_texture_tile_separates_the_halves(midnight, tmp_path):
    tile = tmp_path / "two.png"
    tile.write_bytes(png(two_texture_tile()))
    out = tmp_path / "pca.png"
    done = run_vfm(["render", "pca", "--url", midnight.url, "--scale", "2", "--out", str(out),
                    str(tile)])
    assert done.returncode == 0, done.stderr
    picture = np.asarray(Image.open(out))
    assert picture.shape == (448, 3 * 448, 3)  # [model view | PCA | blend], 224 px x scale 2
    np.testing.assert_array_equal(picture[::2, :448:2], two_texture_tile())  # the model view
    cells = picture[14::28, 448 + 14:896:28].astype(int)  # one pixel per patch, 16 x 16
    first = cells[..., 0]  # red = first principal component
    left, right = first[:, :8], first[:, 8:]
    assert left.max() < right.min() or right.max() < left.min()
    assert abs(left.mean() - right.mean()) > 200


def test_slide_pca_map_over_the_thumbnail(midnight, tmp_path):
    slide = tmp_path / "s.tiff"
    write_slide(slide, 2048, 1536, 0.25, (560, 224, 1680, 952))
    out = tmp_path / "s.parquet"
    assert run_vfm(["slide", "--url", midnight.url, "--out", str(out), str(slide)]
                   ).returncode == 0
    picture_path = tmp_path / "map.png"
    done = run_vfm(["render", "pca", "--out", str(picture_path), str(out)])  # no server needed
    assert done.returncode == 0, done.stderr
    plain = np.asarray(Image.open(tmp_path / "s.thumbnail.plain.png"))
    picture = np.asarray(Image.open(picture_path))
    assert picture.shape == plain.shape == (768, 1024, 3)
    covered = np.zeros(plain.shape[:2], dtype=bool)
    for row in pq.read_table(out, columns=["x", "y", "size"]).to_pylist():
        c0, r0, c1, r1 = footprint(row["x"], row["y"], row["size"], (2048, 1536), (1024, 768))
        covered[r0:r1, c0:c1] = True
    assert covered.any()
    np.testing.assert_array_equal(picture[~covered], plain[~covered])
    assert (picture[covered] != plain[covered]).any(axis=-1).mean() > 0.9
    not_slide = run_vfm(["render", "pca", "--out", str(picture_path),
                         str(tmp_path / "missing.parquet")])
    assert not_slide.returncode == 1
