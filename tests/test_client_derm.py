"""DermClient and `vfm embed --model derm` against the real Derm Truss (stand-in SavedModel):
per-instance errors stay per item, gs:// URIs with a bearer token through a real GCS emulator
behind an auth-checking front, http(s) URLs fetched by the client, compact encodings in Vertex's
`parameters`, splitting under the server's instance cap. Expected embeddings are the stand-in
SavedModel's own output for the same bytes, computed in the test process."""

import io

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from client_helpers import Proxy, random_pngs, run_vfm
from derm_helpers import GcsAuthFront, GcsEmulator, StandInReference
from vfm_client import DermClient, RetryPolicy

TOKEN = "ya29.client-GOOD-token"
PRIVATE, PUBLIC = "client-private", "client-public"


def jpeg(seed):
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture(scope="module")
def gcs():
    emulator = GcsEmulator()
    front = GcsAuthFront(emulator.url, private={PRIVATE: TOKEN})
    yield emulator, front
    front.stop()
    emulator.stop()


@pytest.fixture(scope="module")
def derm(truss_server_factory, gcs):
    _, front = gcs
    return truss_server_factory("derm", {"VFM_GCS_ENDPOINT": front.url,
                                         "VFM_MAX_IMAGES_PER_REQUEST": "6",
                                         "VFM_ALLOW_PRIVATE_URLS": "1"})


@pytest.fixture(scope="module")
def reference():
    from tools.manifest import prepare_standin
    return StandInReference(prepare_standin("derm")["DERM_SAVEDMODEL_DIR"])


def test_mixed_inputs_per_item_errors_and_gcs_token(derm, gcs, reference, loopback_files,
                                                    tmp_path):
    emulator, front = gcs
    pngs = random_pngs(6, seed=31)
    private = emulator.upload(PRIVATE, "cases/a.png", pngs[0], "image/png")
    public = emulator.upload(PUBLIC, "open/b.jpg", jpeg(32), "image/jpeg")
    url = loopback_files.add("/derm/c.png", pngs[1], content_type="image/png")
    path = tmp_path / "d.png"
    path.write_bytes(pngs[2])
    truncated = pngs[3][: len(pngs[3]) // 2]
    inputs = [private, pngs[4], url, truncated, str(path), public,
              emulator.upload(PRIVATE, "cases/missing-token-not-needed.png", pngs[5],
                              "image/png")]
    proxy = Proxy(derm.predict_url)
    try:
        client = DermClient(proxy.url, max_items=4, retry=RetryPolicy(backoff_base_s=0.01))
        results = client.embed(inputs, gcs_token=TOKEN)
        bodies = proxy.bodies()
    finally:
        proxy.close()

    codes = [e.code if e else None for e in results.errors]
    assert codes == [None, None, None, "image_decode_failed", None, None, None]
    expected_bytes = [pngs[0], pngs[4], pngs[1], None, pngs[2], jpeg(32), pngs[5]]
    for got, data in zip(results.embeddings, expected_bytes, strict=True):
        if data is not None:
            assert got.shape == (6144,) and got.dtype == np.float32
            np.testing.assert_allclose(got, reference.embed(data), rtol=0, atol=1e-6)
    assert all("STAND-IN" in m for m in results.model_ids if m)
    # The token went to GCS for the private objects; gs:// instances carried it.
    assert front.headers_for("cases%2Fa.png")[-1].get("Authorization") == f"Bearer {TOKEN}"
    gcs_instances = [i for b in bodies for i in b["instances"] if "gcs_uri" in i]
    assert len(gcs_instances) == 3 and all(i["bearer_token"] == TOKEN for i in gcs_instances)
    assert all(b["parameters"] == {"encoding_format": "base64", "embedding_dtype": "float32"}
               for b in bodies)
    assert client.compact is True  # the server answered base64 strings
    assert results.array().shape == (7, 6144) and np.isnan(results.array()[3]).all()


def test_more_than_the_servers_instance_cap_is_split(derm, reference):
    images = random_pngs(13, seed=33)
    proxy = Proxy(derm.predict_url)
    try:
        results = DermClient(proxy.url, max_items=8).embed(images)
        statuses = [len(b["instances"]) for b in proxy.bodies()]
    finally:
        proxy.close()
    assert results.failed == 0
    # 8 > the server's cap of 6: refused (400 too_many_images), split in halves of 4.
    assert statuses.count(8) == 1 and sum(n for n in statuses if n != 8) == 13
    for got, data in zip(results.embeddings, images, strict=True):
        np.testing.assert_allclose(got, reference.embed(data), rtol=0, atol=1e-6)


def test_float16_transfer(derm, reference):
    """The float16 answer is the float16 rounding of the server's float32 embedding, which is
    within 1e-6 of the reference (a batched forward pass may round differently from the
    reference's single one, and a value that close to a float16 rounding boundary then rounds
    to the neighbouring float16): every value is a float16, within half a float16 step of the
    reference plus 1e-6."""
    images = random_pngs(3, seed=34)
    results = DermClient(derm.predict_url, embedding_dtype="float16").embed(images)
    for got, data in zip(results.embeddings, images, strict=True):
        want = reference.embed(data)
        np.testing.assert_array_equal(got, got.astype(np.float16).astype(np.float32))
        half_step = np.spacing(np.abs(want).astype(np.float16)).astype(np.float32) / 2
        assert np.all(np.abs(got - want) <= half_step + 1e-6)
        assert np.mean(got == want.astype(np.float16).astype(np.float32)) > 0.99


def test_vfm_embed_with_derm(derm, reference, tmp_path):
    folder = tmp_path / "lesions"
    folder.mkdir()
    images = random_pngs(5, seed=35)
    for i, data in enumerate(images):
        (folder / f"{i}.png").write_bytes(data)
    out = tmp_path / "derm.parquet"
    done = run_vfm(["embed", "--url", derm.url, "--model", "derm", "--out", str(out),
                    str(folder)])
    assert done.returncode == 0, done.stderr
    rows = pq.read_table(out).to_pylist()
    assert [r["source"] for r in rows] == [str(folder / f"{i}.png") for i in range(5)]
    for row, data in zip(rows, images, strict=True):
        assert row["shape"] == [6144] and "STAND-IN" in row["model_id"]
        np.testing.assert_allclose(row["embedding"], reference.embed(data), rtol=0, atol=1e-6)
    assert run_vfm(["embed", "--url", derm.url, "--model", "derm", "--task", "segmentation",
                    "--out", str(out), str(folder)]).returncode == 1
