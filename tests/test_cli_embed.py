"""`vfm embed` as a real subprocess against the real Midnight server: resume after a kill,
reruns retry only failures, the Parquet columns, list inputs, exit statuses."""

import signal
import subprocess
import time

import numpy as np
import pyarrow.parquet as pq

from client_helpers import (
    VFM,
    b64,
    embed_direct,
    images_sent,
    random_pngs,
    run_vfm,
)


def write_folder(folder, count, seed):
    folder.mkdir(parents=True, exist_ok=True)
    images = random_pngs(count, seed=seed)
    for i, data in enumerate(images):
        (folder / f"tile_{i:03d}.png").write_bytes(data)
    return images


def sent_images(proxy):
    return [image for body in proxy.bodies() for image in images_sent(body)]


def test_killed_midway_then_rerun_writes_every_row_exactly_once(midnight, proxy, tmp_path):
    folder = tmp_path / "tiles"
    images = write_folder(folder, 60, seed=21)
    out = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    proxy.default = ("delay", 0.3)
    args = ["embed", "--url", proxy.url, "--max-items", "4", "--concurrency", "1",
            "--flush-rows", "4", "--out", str(out), str(folder), "--no-progress"]
    process = subprocess.Popen([*VFM, *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(parts.glob("part-*.parquet"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()  # killed before the final merge

    done_before = set()
    for part in parts.glob("part-*.parquet"):
        rows = pq.read_table(part, columns=["source", "error"]).to_pylist()
        assert all(r["error"] is None for r in rows)
        done_before |= {r["source"] for r in rows}
    assert 12 <= len(done_before) < 60

    proxy.reset()
    rerun = run_vfm(args)
    assert rerun.returncode == 0, rerun.stderr
    assert not parts.exists()
    table = pq.read_table(out)
    assert table.column_names == ["source", "embedding", "shape", "model_id", "error"]
    sources = table.column("source").to_pylist()
    expected = [str(folder / f"tile_{i:03d}.png") for i in range(60)]
    assert sorted(sources) == expected  # every row exactly once
    # The rerun sent exactly the images not written before the kill, each once.
    resent = sent_images(proxy)
    assert sorted(resent) == sorted(b64(images[expected.index(s)]) for s in expected
                                    if s not in done_before)
    by_source = {r["source"]: r for r in table.to_pylist()}
    got = np.stack([np.asarray(by_source[s]["embedding"], dtype=np.float32) for s in expected])
    np.testing.assert_allclose(got, embed_direct(midnight.predict_url, images), rtol=0, atol=1e-5)
    assert all(by_source[s]["shape"] == [got.shape[1]] for s in expected)
    assert all("STAND-IN" in by_source[s]["model_id"] for s in expected)


def test_rerun_retries_only_the_failures(midnight, proxy, tmp_path):
    folder = tmp_path / "tiles"
    write_folder(folder, 8, seed=22)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
    (folder / "empty.jpg").write_bytes(b"")
    out = tmp_path / "out.parquet"
    args = ["embed", "--url", proxy.url, "--max-items", "3", "--retries", "2",
            "--out", str(out), str(folder)]
    first = run_vfm(args)
    assert first.returncode == 2, first.stderr
    rows = {r["source"]: r for r in pq.read_table(out).to_pylist()}
    assert len(rows) == 10
    failed = sorted(s for s, r in rows.items() if r["error"] is not None)
    assert failed == [str(folder / "broken.png"), str(folder / "empty.jpg")]
    assert rows[str(folder / "broken.png")]["error"].startswith("image_decode_failed")
    assert rows[str(folder / "broken.png")]["embedding"] is None

    fixed = random_pngs(2, seed=23)
    (folder / "broken.png").write_bytes(fixed[0])
    (folder / "empty.jpg").write_bytes(fixed[1])
    proxy.reset()
    second = run_vfm(args)
    assert second.returncode == 0, second.stderr
    assert sorted(sent_images(proxy)) == sorted(b64(f) for f in fixed)
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 10 and all(r["error"] is None for r in rows)

    third = run_vfm(args)  # nothing left to do
    assert third.returncode == 0 and len(pq.read_table(out)) == 10


def test_list_files_with_relative_paths_and_urls(midnight, tmp_path, loopback_files):
    images = random_pngs(4, seed=24)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(images[0])
    (tmp_path / "b.png").write_bytes(images[1])
    url = loopback_files.add("/cli/c.png", images[2], content_type="image/png")
    listing = tmp_path / "inputs.csv"
    listing.write_text(f"path,label\nsub/a.png,x\n{url},y\n\n")
    text = tmp_path / "more.txt"
    text.write_text("# comment\nb.png\nmissing.png\n")
    out = tmp_path / "out.parquet"
    done = run_vfm(["embed", "--url", midnight.url, "--task", "segmentation", "--out", str(out),
                    str(listing), str(text)], cwd=tmp_path)
    assert done.returncode == 2, done.stderr  # missing.png
    rows = pq.read_table(out).to_pylist()
    assert [r["source"] for r in rows] == ["sub/a.png", url, "b.png", "missing.png"]
    assert rows[3]["error"].startswith("file_not_found")
    reference = embed_direct(midnight.predict_url, [images[0], images[2], images[1]],
                             task="segmentation")
    for row, want in zip(rows[:3], reference, strict=True):
        assert row["shape"] == list(want.shape)
        np.testing.assert_allclose(np.asarray(row["embedding"]).reshape(want.shape), want,
                                   rtol=0, atol=1e-5)


def test_exit_status_1_when_the_run_cannot_proceed(midnight, tmp_path):
    from tools.local_server import free_port
    folder = tmp_path / "tiles"
    write_folder(folder, 2, seed=25)
    out = tmp_path / "out.parquet"
    unreachable = run_vfm(["embed", "--url", f"http://127.0.0.1:{free_port()}", "--retries", "1",
                           "--out", str(out), str(folder)])
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    assert run_vfm(["embed", str(folder)]).returncode == 1  # usage: no --url / --out
    assert run_vfm(["embed", "--url", midnight.url, "--out", str(out)]).returncode == 1
    assert run_vfm(["embed", "--url", midnight.url, "--out", str(out), str(folder)]).returncode == 0
    other_task = run_vfm(["embed", "--url", midnight.url, "--task", "segmentation",
                          "--out", str(out), str(folder)])
    assert other_task.returncode == 1 and "different run" in other_task.stderr
    again = run_vfm(["embed", "--url", midnight.url, "--task", "segmentation", "--overwrite",
                     "--out", str(out), str(folder)])
    assert again.returncode == 0
    assert pq.read_table(out).column("shape").to_pylist()[0][1:] == [16, 16]
