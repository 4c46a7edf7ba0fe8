"""The Scale recipe: `vfm slide` once per slide under Dask (a real local cluster of worker
processes), against the real Midnight server. Each slide's output equals a direct `vfm slide`
run; a slide that cannot be processed makes the recipe exit 1 without hiding the others."""

import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq

from client_helpers import run_vfm, write_slide


def rows(path):
    table = pq.read_table(path).to_pylist()
    return sorted(((r["x"], r["y"]), r["embedding"], r["error"]) for r in table)


def test_dask_local_cluster_runs_vfm_slide_per_slide(midnight, tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    write_slide(slides / "a.tiff", 1024, 1024, 0.25, (100, 100, 900, 600), seed=1)
    write_slide(slides / "b.tiff", 1536, 1024, 0.5, (400, 200, 1400, 1000), seed=2)
    write_slide(slides / "c.tiff", 1024, 1024, None, (100, 100, 900, 600), seed=3)  # no mpp
    out = tmp_path / "out"
    recipe = [sys.executable, "-m", "vfm_client.recipes.dask_slides", "--url", midnight.url,
              "--out-dir", str(out), "--workers", "2"]
    done = subprocess.run([*recipe, *(str(slides / n) for n in ("a.tiff", "b.tiff", "c.tiff"))],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 1, done.stderr  # c.tiff has no mpp
    assert "c.tiff" in done.stderr and "--slide-mpp" in done.stderr
    assert not (out / "c.parquet").exists()
    for name in ("a", "b"):
        direct = tmp_path / f"direct_{name}.parquet"
        assert run_vfm(["slide", "--url", midnight.url, "--out", str(direct),
                        str(slides / f"{name}.tiff")]).returncode == 0
        got, want = rows(out / f"{name}.parquet"), rows(direct)
        assert [g[0] for g in got] == [w[0] for w in want] and len(got) > 0
        np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], rtol=0, atol=1e-5)
        assert (out / f"{name}.thumbnail.png").is_file()

    # Extra `vfm slide` options pass through: with the mpp given, every slide succeeds; a,
    # finished before, is resumed and left as it was; c is done now.
    before = (out / "a.parquet").stat().st_mtime_ns
    again = subprocess.run([*recipe, str(slides / "a.tiff"), str(slides / "c.tiff"), "--",
                            "--slide-mpp", "0.25"], capture_output=True, text=True,
                           timeout=600, check=False)
    assert again.returncode == 0, again.stderr
    assert len(rows(out / "c.parquet")) > 0
    assert (out / "a.parquet").stat().st_mtime_ns == before
