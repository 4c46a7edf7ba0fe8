"""Every fast path equals the plain path, through the real Truss servers.

- compact outputs: base64 float32 == JSON floats exactly; float16 (JSON or base64) == the
  float32 numbers cast to float16 exactly (Midnight fields, Derm `parameters`);
- half precision: bfloat16 / float16 forward passes within cosine 0.999 of float32, both tasks;
- dynamic batching: concurrent single-image requests get exactly their own images' embeddings,
  in merged forward passes (read from the server's Prometheus metrics).
"""

import base64
import concurrent.futures
import re

import numpy as np
import pytest
import requests

from images_for_tests import b64, encode, photo

NAMES = ["astronaut", "coffee", "chelsea", "rocket", "camera"]


def images(count: int, fmt: str = "PNG") -> list:
    return [b64(encode(photo(NAMES[i % 5], (180 + 17 * i, 240 - 9 * i)), fmt))
            for i in range(count)]


def post(server, body) -> dict:
    response = server.predict(body)
    assert response.status_code == 200, response.text
    return response.json()


def decode_base64_items(items, dtype, shape) -> np.ndarray:
    """The README's one-liner, per item."""
    return np.stack([np.frombuffer(base64.b64decode(s), dtype).reshape(shape) for s in items])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def metric_sum(server, name: str) -> float:
    """Sum of a Prometheus sample over all label sets, from the server's /metrics."""
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    pattern = re.compile(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", re.M)
    return sum(float(m.group(2)) for m in pattern.finditer(text))


@pytest.fixture(scope="module")
def midnight(truss_server_factory):
    return truss_server_factory("midnight", env={"VFM_BATCH_MAX_WAIT_MS": "50"})


@pytest.mark.parametrize("task", ["classification", "segmentation"])
def test_midnight_encodings_equal_the_float_json(midnight, task):
    tiles = images(3)
    plain = post(midnight, {"image_base64_list": tiles, "task": task})
    assert (plain["encoding_format"], plain["embedding_dtype"]) == ("float", "float32")
    reference = np.asarray(plain["embeddings"], dtype=np.float32)
    shape = tuple(plain["embedding_shape"][1:])
    for fmt, dtype in [("base64", "float32"), ("base64", "float16"), ("float", "float16")]:
        body = post(midnight, {"image_base64_list": tiles, "task": task,
                               "encoding_format": fmt, "embedding_dtype": dtype})
        assert (body["encoding_format"], body["embedding_dtype"]) == (fmt, dtype)
        assert body["embedding_shape"] == plain["embedding_shape"]
        expected = reference.astype(dtype)
        if fmt == "base64":
            got = decode_base64_items(body["embeddings"], "<f4" if dtype == "float32" else "<f2",
                                      shape)
        else:
            got = np.asarray(body["embeddings"], dtype=np.float64).astype(dtype)
        np.testing.assert_array_equal(got, expected, err_msg=f"{fmt}/{dtype}")


def test_midnight_rejects_unknown_encodings(midnight):
    for extra in ({"encoding_format": "hex"}, {"embedding_dtype": "int8"},
                  {"encoding_format": ["base64"]}):
        response = midnight.predict({"image_base64": images(1)[0], **extra})
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_request"


def test_derm_parameters_choose_the_encoding(truss_server_factory):
    derm = truss_server_factory("derm")
    instances = [{"input_bytes": data} for data in images(2)] + [{"input_bytes": "!!"}]
    plain = post(derm, {"instances": instances})
    compact = post(derm, {"instances": instances, "parameters": {
        "encoding_format": "base64", "embedding_dtype": "float16", "other": 1}})
    for p, c in zip(plain["predictions"][:2], compact["predictions"][:2], strict=True):
        expected = np.asarray(p["embedding"], dtype=np.float32).astype(np.float16)
        got = np.frombuffer(base64.b64decode(c["embedding"]), "<f2")
        np.testing.assert_array_equal(got, expected)
    assert compact["predictions"][2] == plain["predictions"][2]  # per-instance error unchanged
    assert compact["metadata"]["encoding_format"] == "base64"


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_half_precision_is_within_cosine_0999_of_float32(truss_server_factory, midnight,
                                                         precision):
    half = truss_server_factory("midnight", env={"VFM_PRECISION": precision})
    tiles = images(4, "JPEG")
    for task in ("classification", "segmentation"):
        full = np.asarray(post(midnight, {"image_base64_list": tiles, "task": task})["embeddings"])
        low = np.asarray(post(half, {"image_base64_list": tiles, "task": task})["embeddings"])
        assert low.shape == full.shape
        assert cosines(low, full).min() >= 0.999, (task, cosines(low, full))
        assert not np.array_equal(low, full)  # the half-precision path really ran


def test_concurrent_single_image_requests_are_merged_and_exact(midnight):
    tiles = images(12)
    alone = [np.asarray(post(midnight, {"image_base64": t, "batch_size": 1})["embeddings"][0])
             for t in tiles]
    passes_before = metric_sum(midnight, "vfm_forward_batch_size_count")
    items_before = metric_sum(midnight, "vfm_forward_batch_size_sum")
    with concurrent.futures.ThreadPoolExecutor(len(tiles)) as pool:
        bodies = list(pool.map(lambda t: post(midnight, {"image_base64": t}), tiles))
    passes = metric_sum(midnight, "vfm_forward_batch_size_count") - passes_before
    items = metric_sum(midnight, "vfm_forward_batch_size_sum") - items_before
    for body, expected in zip(bodies, alone, strict=True):
        np.testing.assert_allclose(np.asarray(body["embeddings"][0]), expected, atol=1e-5)
    assert items == len(tiles)
    assert passes < len(tiles), f"{passes} forward passes for {len(tiles)} concurrent images"


def test_stage_metrics_are_published(midnight):
    post(midnight, {"image_base64": images(1)[0]})
    text = requests.get(f"{midnight.url}/metrics", timeout=10).text
    for stage in ("body", "decode", "forward", "encode"):
        assert f'vfm_stage_seconds_count{{model="midnight",stage="{stage}"}}' in text, stage
    assert 'vfm_requests_total{code="",model="midnight",outcome="ok"}' in text \
        or re.search(r'vfm_requests_total\{[^}]*outcome="ok"[^}]*\}', text)
    midnight.predict({"image_base64": "!!"})
    text = requests.get(f"{midnight.url}/metrics", timeout=10).text
    assert re.search(r'vfm_requests_total\{[^}]*code="invalid_base64"[^}]*\} 1\.0', text)


def test_reduced_decode_of_large_jpegs_is_within_cosine_0999_of_full_decode(
        truss_server_factory, midnight):
    """Large JPEGs decoded at a reduced DCT scale (the default) vs full decode
    (VFM_REDUCED_DECODE=0, bit-exact): the embeddings stay within cosine 0.999, both tasks."""
    full = truss_server_factory("midnight", env={"VFM_REDUCED_DECODE": "0"})
    large = [b64(encode(photo(name, (2400, 1800)), "JPEG", quality=90))
             for name in ("astronaut", "coffee", "rocket")]
    for task in ("classification", "segmentation"):
        reduced = np.asarray(post(midnight, {"image_base64_list": large, "task": task})
                             ["embeddings"])
        exact = np.asarray(post(full, {"image_base64_list": large, "task": task})["embeddings"])
        assert cosines(reduced, exact).min() >= 0.999, (task, cosines(reduced, exact))
        assert not np.array_equal(reduced, exact)  # the reduced path really ran
