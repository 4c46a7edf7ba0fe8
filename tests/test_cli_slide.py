"""`vfm slide` on a synthetic pyramidal TIFF written here with tifffile (known mpp, known tissue
rectangle): the tile grid, level choice, coordinates and tissue filter equal an independent
computation from the known geometry, and the embeddings equal those of the same tiles cut from
the written arrays and sent by hand. Real Midnight server, `vfm` as a subprocess."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

from client_helpers import Proxy, b64, png, run_vfm, write_slide

W, H, MPP = 2048, 1536, 0.25
TISSUE = (560, 224, 1680, 952)  # x0, y0, x1, y1 at level 0 (even: exact on level 1)
TILE = 224
MIN_TISSUE = 0.25


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slide")
    path = folder / "synthetic.tiff"
    levels = write_slide(path, W, H, MPP, TISSUE)
    return path, levels


def expected_tiles(target_mpp, downsamples=(1.0, 2.0, 4.0)):
    """The contract, recomputed: level, read size, grid, tissue fraction from the rectangle."""
    wanted = target_mpp / MPP
    level = max(i for i, d in enumerate(downsamples) if d <= wanted * 1.01)
    ds = downsamples[level]
    read_px = round(TILE * wanted / ds)
    step = read_px * ds
    level_w, level_h = W // int(ds), H // int(ds)
    x0, y0, x1, y1 = TISSUE
    tiles = []
    for j in range(level_h // read_px):
        for i in range(level_w // read_px):
            x, y = int(i * step), int(j * step)
            overlap_x = max(0, min(x + step, x1) - max(x, x0))
            overlap_y = max(0, min(y + step, y1) - max(y, y0))
            if overlap_x * overlap_y / step ** 2 >= MIN_TISSUE:
                tiles.append((x, y))
    return level, read_px, int(step), tiles


def tiles_by_hand(levels, level, read_px, corners, midnight):
    """Cut each tile from the written level array, resize as documented, send it alone."""
    ds = 2 ** level
    out = []
    for x, y in corners:
        lx, ly = x // ds, y // ds
        tile = Image.fromarray(levels[level][ly:ly + read_px, lx:lx + read_px])
        if read_px != TILE:
            tile = tile.resize((TILE, TILE), Image.Resampling.BILINEAR)
        body = {"image_base64": b64(png(np.asarray(tile)))}
        reply = requests.post(midnight.predict_url, json=body, timeout=60)
        out.append(np.asarray(reply.json()["embeddings"][0], dtype=np.float32))
    return np.stack(out)


def rows_of(out):
    rows = pq.read_table(out).to_pylist()
    return sorted(rows, key=lambda r: (r["y"], r["x"]))


@pytest.mark.parametrize("target_mpp", [0.5, 0.7, 1.0])
def test_grid_level_tissue_and_embeddings(midnight, slide, tmp_path, target_mpp):
    path, levels = slide
    out = tmp_path / "slide.parquet"
    done = run_vfm(["slide", "--url", midnight.url, "--mpp", str(target_mpp), "--out", str(out),
                    str(path)])
    assert done.returncode == 0, done.stderr
    level, read_px, size, tiles = expected_tiles(target_mpp)
    rows = rows_of(out)
    assert pq.read_table(out).column_names == ["x", "y", "level", "size", "mpp", "embedding",
                                               "error"]
    assert [(r["x"], r["y"]) for r in rows] == sorted(tiles, key=lambda t: (t[1], t[0]))
    assert {r["level"] for r in rows} == {level}
    assert {r["size"] for r in rows} == {size}
    assert all(r["error"] is None for r in rows)
    for row in rows:
        assert row["mpp"] == pytest.approx(size * MPP / TILE)
    got = np.asarray([r["embedding"] for r in rows], dtype=np.float32)
    want = tiles_by_hand(levels, level, read_px, [(r["x"], r["y"]) for r in rows], midnight)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_expected_geometry_of_the_three_runs():
    """The cases above cover: the exact level (0.5 -> level 1, no resize), a resize from the
    finer level (0.7 -> level 1, 314 px), and a deeper level (1.0 -> level 2)."""
    assert expected_tiles(0.5)[:3] == (1, 224, 448)
    assert expected_tiles(0.7)[:3] == (1, 314, 628)
    assert expected_tiles(1.0)[:3] == (2, 224, 896)
    assert len(expected_tiles(0.5)[3]) == 6 and len(expected_tiles(0.7)[3]) == 4


def test_thumbnail_shows_tissue_and_the_kept_grid(midnight, slide, tmp_path):
    path, levels = slide
    out = tmp_path / "slide.parquet"
    assert run_vfm(["slide", "--url", midnight.url, "--out", str(out), str(path)]).returncode == 0
    annotated = Image.open(tmp_path / "slide.thumbnail.png")
    plain = Image.open(tmp_path / "slide.thumbnail.plain.png")
    # 0.5 mpp: 448 px tiles -> thumbnail downsample min(448 / 8, 2048 / 1024) = 2.
    assert annotated.size == plain.size == (W // 2, H // 2)
    np.testing.assert_array_equal(np.asarray(plain), levels[1])
    picture = np.asarray(annotated).astype(int)
    _, _, _, tiles = expected_tiles(0.5)
    for x, y in tiles:  # each kept tile's outline is drawn (blue) at its footprint corner
        assert tuple(picture[y // 2, x // 2]) == (20, 60, 220)
    x0, y0, x1, y1 = (v // 2 for v in TISSUE)
    inside, outside = picture[y0 + 5, x0 + 5], picture[5, 5]
    assert inside[1] > levels[1][y0 + 5, x0 + 5, 1]  # tissue tinted green
    assert tuple(outside) == tuple(levels[1][5, 5])  # background untouched


def test_slide_without_mpp_needs_slide_mpp(midnight, tmp_path):
    path = tmp_path / "no_mpp.tiff"
    levels = write_slide(path, W, H, None, TISSUE)
    out = tmp_path / "no_mpp.parquet"
    refused = run_vfm(["slide", "--url", midnight.url, "--out", str(out), str(path)])
    assert refused.returncode == 1
    assert "microns-per-pixel" in refused.stderr and "--slide-mpp" in refused.stderr
    assert not out.exists()
    done = run_vfm(["slide", "--url", midnight.url, "--slide-mpp", str(MPP), "--out", str(out),
                    str(path)])
    assert done.returncode == 0, done.stderr
    level, read_px, _, tiles = expected_tiles(0.5)
    rows = rows_of(out)
    assert [(r["x"], r["y"]) for r in rows] == sorted(tiles, key=lambda t: (t[1], t[0]))
    want = tiles_by_hand(levels, level, read_px, [(r["x"], r["y"]) for r in rows], midnight)
    np.testing.assert_allclose(np.asarray([r["embedding"] for r in rows]), want, rtol=0,
                               atol=1e-5)


def test_tiffslide_reads_the_same_tiles_and_a_rerun_sends_nothing(midnight, slide, tmp_path):
    path, _ = slide
    a, b = tmp_path / "openslide.parquet", tmp_path / "tiffslide.parquet"
    assert run_vfm(["slide", "--url", midnight.url, "--backend", "openslide", "--out", str(a),
                    str(path)]).returncode == 0
    proxy = Proxy(midnight.predict_url)
    try:
        args = ["slide", "--url", proxy.url, "--backend", "tiffslide", "--max-items", "4",
                "--out", str(b), str(path)]
        assert run_vfm(args).returncode == 0
        assert len(proxy.records) == 2  # 6 tissue tiles, 4 per request
        rows_a, rows_b = rows_of(a), rows_of(b)
        assert [(r["x"], r["y"]) for r in rows_a] == [(r["x"], r["y"]) for r in rows_b]
        np.testing.assert_allclose(np.asarray([r["embedding"] for r in rows_a]),
                                   np.asarray([r["embedding"] for r in rows_b]), rtol=0,
                                   atol=1e-5)
        proxy.reset()
        assert run_vfm(args).returncode == 0  # resumed: every tile already done
        assert proxy.records == []
        assert len(rows_of(b)) == 6
    finally:
        proxy.close()
