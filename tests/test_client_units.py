"""Client pieces without a server: request planning, tissue threshold, slide geometry rules,
list inputs, URLs, the resumable table's merge rule, and the package itself (wheel contents,
no torch / TensorFlow on import)."""

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vfm_client.cli import expand_inputs
from vfm_client.errors import RunError
from vfm_client.jobs import BODY_OVERHEAD, ITEM_OVERHEAD, plan_chunks
from vfm_client.slide import choose_level, footprint, otsu_threshold, thumbnail_size, tile_geometry
from vfm_client.tables import ResumableTable
from vfm_client.transport import normalize_url

ROOT = Path(__file__).resolve().parents[1]


def test_plan_chunks_caps_and_groups():
    indices = list(range(10))
    assert [len(c) for c in plan_chunks(indices, [10] * 10, ["a"] * 10, 4, 10**6)] == [4, 4, 2]
    cap = BODY_OVERHEAD + 2 * (100 + ITEM_OVERHEAD)
    assert plan_chunks(indices[:5], [100] * 5, ["a"] * 5, 8, cap) == [[0, 1], [2, 3], [4]]
    assert plan_chunks([0, 1, 2, 3], [1] * 4, ["u", "u", "i", "u"], 8, 10**6) == [
        [0, 1], [2], [3]]
    assert plan_chunks([0, 1, 2], [1, 10**6, 1], ["a"] * 3, 8, 1000) == [[0], [1], [2]]
    with pytest.raises(ValueError):
        plan_chunks([0], [1], ["a"], 0, 10**6)


def test_otsu_matches_scikit_image():
    from skimage.filters import threshold_otsu
    rng = np.random.default_rng(0)
    for _ in range(20):
        values = np.concatenate([rng.normal(rng.uniform(0, 80), 10, 500),
                                 rng.normal(rng.uniform(120, 250), 15, 300)])
        values = np.clip(values, 0, 255).astype(np.uint8)
        assert otsu_threshold(values) == threshold_otsu(values)
    assert otsu_threshold(np.full(10, 7, np.uint8)) == 7


def test_level_choice_and_geometry_rules():
    downsamples = [1.0, 4.000320, 16.0016, 32.003]
    assert choose_level(downsamples, 4.0) == 1  # within 1% above: taken
    assert choose_level(downsamples, 3.9) == 0
    assert choose_level(downsamples, 100) == 3
    geometry = tile_geometry([1.0, 2.0, 4.0], slide_mpp=0.25, target_mpp=0.5, tile_px=224)
    assert (geometry.level, geometry.read_px, geometry.size, geometry.mpp) == (1, 224, 448, 0.5)
    with pytest.raises(RunError):
        tile_geometry([1.0], slide_mpp=0, target_mpp=0.5, tile_px=224)
    assert thumbnail_size(100_000, 80_000, 448) == (1786, 1429)  # 8 px per tile
    assert thumbnail_size(2048, 1536, 448) == (1024, 768)  # long side 1024
    assert thumbnail_size(400_000, 1000, 448) == (4096, 10)  # long side capped
    assert footprint(448, 0, 448, (2048, 1536), (1024, 768)) == (224, 0, 448, 224)


def test_expand_inputs(tmp_path):
    (tmp_path / "d" / "e").mkdir(parents=True)
    for name in ("d/b.png", "d/a.JPG", "d/e/c.tif", "d/notes.md"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "list.tsv"
    listing.write_text("url\tsite\nhttps://h/x.png\t1\nd/a.JPG\t2\n")
    pairs = expand_inputs([str(tmp_path / "d"), str(listing), "gs://b/o.png",
                           str(tmp_path / "d" / "b.png")])
    assert pairs == [(str(tmp_path / "d/a.JPG"), str(tmp_path / "d/a.JPG")),
                     (str(tmp_path / "d/b.png"), str(tmp_path / "d/b.png")),
                     (str(tmp_path / "d/e/c.tif"), str(tmp_path / "d/e/c.tif")),
                     ("https://h/x.png", "https://h/x.png"),
                     ("d/a.JPG", str(tmp_path / "d/a.JPG")),
                     ("gs://b/o.png", "gs://b/o.png")]


def test_normalize_url():
    assert normalize_url("http://127.0.0.1:8101") == \
        "http://127.0.0.1:8101/v1/models/model:predict"
    baseten = "https://model-abc.api.baseten.co/environments/production/predict"
    assert normalize_url(baseten) == baseten
    with pytest.raises(ValueError):
        normalize_url("127.0.0.1:8101")


def test_table_keeps_one_row_per_key_success_first(tmp_path):
    schema = pa.schema([("source", pa.string()), ("embedding", pa.list_(pa.float32())),
                        ("error", pa.string())])
    out = tmp_path / "t.parquet"
    table = ResumableTable(out, schema, ["source"], {"run": 1}, flush_rows=2)
    table.add([{"source": "a", "embedding": np.ones(3)}, {"source": "b", "error": "x: 1"}])
    table.add([{"source": "c", "error": "y: 2"}])
    assert table.close() == (1, 2)
    again = ResumableTable(out, schema, ["source"], {"run": 1}, flush_rows=1)
    assert again.pending(["a", "b", "c", "d"]) == ["b", "c", "d"]
    again.add([{"source": "b", "embedding": np.zeros(3)}, {"source": "c", "error": "y: 3"}])
    again.add([{"source": "d", "embedding": np.zeros(3)}])
    assert again.close() == (3, 1)
    rows = {r["source"]: r for r in pq.read_table(out).to_pylist()}
    assert sorted(rows) == ["a", "b", "c", "d"] and rows["c"]["error"] == "y: 3"
    with pytest.raises(RunError, match="different run"):
        ResumableTable(out, schema, ["source"], {"run": 2})
    assert ResumableTable(out, schema, ["source"], {"run": 2}, overwrite=True).done == set()


def test_wheel_ships_schemas_and_entry_point(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT / "client")], check=True,
                   capture_output=True)
    (wheel,) = tmp_path.glob("vfm_client-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names
                            if n.endswith("entry_points.txt"))
        metadata = next(archive.read(n).decode() for n in names if n.endswith("METADATA"))
    schema_files = {p.name for p in (ROOT / "schemas").glob("*.json")}
    assert {f"vfm_client/schemas/{n}" for n in schema_files} <= names
    assert "vfm = vfm_client.cli:main" in entry_points
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    assert not any("torch" in r or "tensorflow" in r for r in requires)
    assert any("openslide-bin" in r and "extra == \"slide\"" in r for r in requires)


def test_import_and_help_do_not_load_torch_or_tensorflow():
    code = ("import sys, vfm_client, vfm_client.cli, vfm_client.slide, vfm_client.pictures; "
            "heavy = [m for m in ('torch', 'tensorflow', 'transformers') if m in sys.modules]; "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
    done = subprocess.run([sys.executable, "-m", "vfm_client.cli", "--help"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0 and "embed" in done.stdout and "slide" in done.stdout
