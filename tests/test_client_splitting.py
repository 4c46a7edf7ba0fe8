"""The client splits a job into requests under item and byte caps, runs them concurrently,
and returns every result in input order, equal to single-image requests.

Real Midnight Truss server (stand-in checkpoint) on 127.0.0.1; requests counted by a real
loopback proxy in front of it; references computed with plain `requests`, one image each.
"""

import base64

import numpy as np

from client_helpers import b64, embed_direct, images_sent, random_pngs
from vfm_client import MidnightClient
from vfm_client.jobs import BODY_OVERHEAD, ITEM_OVERHEAD

ATOL = 1e-5  # batched vs single-image forward passes may differ in the last bits


def assert_same_rows(got: np.ndarray, want: np.ndarray) -> None:
    """Equal within ATOL, and each row nearest to its own reference (order kept)."""
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    flat_got, flat_want = got.reshape(len(got), -1), want.reshape(len(want), -1)
    distances = ((flat_got[:, None, :] - flat_want[None, :, :]) ** 2).sum(-1)
    assert (distances.argmin(axis=1) == np.arange(len(got))).all()


def test_100_images_under_a_16_item_cap_make_7_requests_in_order(midnight, proxy):
    images = random_pngs(100, seed=1)
    client = MidnightClient(proxy.url, max_items=16, concurrency=3)
    embeddings = client.embed(images)

    bodies = proxy.bodies()
    assert len(bodies) == 7
    assert sorted(len(images_sent(b)) for b in bodies) == [4] + [16] * 6
    # Every image sent exactly once; the requests hold consecutive runs of the input.
    order = [b64(i) for i in images]
    runs = sorted((images_sent(b) for b in bodies), key=lambda run: order.index(run[0]))
    assert [s for run in runs for s in run] == order
    assert all(b.get("encoding_format") == "base64" for b in bodies)  # compact when supported

    reference = embed_direct(midnight.predict_url, images)
    assert embeddings.dtype == np.float32
    assert_same_rows(embeddings, reference)


def test_byte_cap_splits_and_every_body_stays_under_it(midnight, proxy):
    images = random_pngs(10, seed=2, side=(60, 61))  # equal pixel counts: similar sizes
    per_item = max(len(b64(i)) for i in images) + ITEM_OVERHEAD
    cap = BODY_OVERHEAD + 3 * per_item  # room for 3 images per request
    client = MidnightClient(proxy.url, max_items=16, max_bytes=cap, concurrency=2)
    embeddings = client.embed(images)

    records = proxy.records
    assert all(r["bytes"] <= cap for r in records)
    assert [len(images_sent(r["body"])) for r in sorted(records, key=lambda r: r["time"])
            ] == [3, 3, 3, 1]
    assert_same_rows(embeddings, embed_direct(midnight.predict_url, images))


def test_image_over_the_byte_cap_is_its_items_error_only(midnight, proxy):
    small = random_pngs(3, seed=3, side=(40, 41))
    big = random_pngs(1, seed=4, side=(200, 201))[0]
    cap = BODY_OVERHEAD + 2 * (len(b64(small[0])) + 64)
    results = MidnightClient(proxy.url, max_bytes=cap).embed_results(
        [small[0], big, small[1], small[2]])
    assert [e.code if e else None for e in results.errors] == [
        None, "request_too_large", None, None]
    assert all(b64(big) not in images_sent(b) for b in proxy.bodies())  # never sent
    assert_same_rows(results.array()[[0, 2, 3]], embed_direct(midnight.predict_url, small))


def test_urls_and_inline_images_keep_input_order(midnight, proxy, loopback_files):
    images = random_pngs(9, seed=5)
    inputs = [loopback_files.add(f"/split/{i}.png", data, content_type="image/png")
              if i % 3 == 0 else data for i, data in enumerate(images)]
    embeddings = MidnightClient(proxy.url, max_items=4).embed(inputs)
    bodies = proxy.bodies()
    # URL runs go in image_urls, inline runs in image_base64_list: never mixed in one request.
    assert all(("image_urls" in b) != ("image_base64_list" in b) for b in bodies)
    assert sum(len(b.get("image_urls", [])) for b in bodies) == 3
    assert_same_rows(embeddings, embed_direct(midnight.predict_url, images))


def test_segmentation_float16_and_inputs_of_every_kind(midnight, tmp_path):
    rng = np.random.default_rng(6)
    array = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    path = tmp_path / "tile.png"
    path.write_bytes(random_pngs(1, seed=7)[0])
    from PIL import Image
    pil = Image.fromarray(rng.integers(0, 256, (70, 40, 3), dtype=np.uint8))
    raw = random_pngs(1, seed=10)[0]
    inputs = [array, str(path), pil, raw]
    exact = MidnightClient(midnight.predict_url).embed(inputs, task="segmentation")
    half = MidnightClient(midnight.predict_url, embedding_dtype="float16").embed(
        inputs, task="segmentation")
    import io
    as_png = []
    for value in inputs:
        if isinstance(value, np.ndarray):
            value = Image.fromarray(value)
        if isinstance(value, Image.Image):
            buf = io.BytesIO()
            value.save(buf, format="PNG")
            value = buf.getvalue()
        as_png.append(value if isinstance(value, bytes) else path.read_bytes())
    assert len(set(as_png)) == 4
    reference = embed_direct(midnight.predict_url, as_png, task="segmentation")
    assert exact.shape == (4, *reference.shape[1:]) and exact.ndim == 4
    assert_same_rows(exact, reference)
    np.testing.assert_allclose(half, reference, rtol=2e-3, atol=2e-3)  # float16 rounding
    assert not np.array_equal(half, exact)


def test_server_without_compact_encodings_falls_back_once(midnight, proxy):
    """An older server answers 400 invalid_request to the unknown `encoding_format` field; the
    proxy answers exactly that for any request carrying it, and passes the others."""
    def old_server(body):
        if isinstance(body, dict) and "encoding_format" in body:
            return (400, {}, {"error": {"code": "invalid_request", "message":
                                        "unknown field(s): embedding_dtype, encoding_format"}})
        return None

    proxy.rule = old_server
    images = random_pngs(12, seed=8)
    client = MidnightClient(proxy.url, max_items=4, concurrency=2)
    embeddings = client.embed(images)
    bodies = proxy.bodies()
    with_field = [b for b in bodies if "encoding_format" in b]
    assert len(with_field) == 1 and len(bodies) == 4  # one refusal, then floats only
    assert client.compact is False
    assert_same_rows(embeddings, embed_direct(midnight.predict_url, images))


def test_base64_decoding_matches_the_documented_numpy_line(midnight):
    """The one-line decode from the README, on a raw response."""
    import requests
    data = random_pngs(1, seed=9)[0]
    body = requests.post(midnight.predict_url, json={
        "image_base64_list": [b64(data)], "task": "segmentation",
        "encoding_format": "base64", "embedding_dtype": "float32"}, timeout=60).json()
    shape = body["embedding_shape"]
    decoded = np.frombuffer(base64.b64decode(body["embeddings"][0]), "<f4").reshape(shape[1:])
    np.testing.assert_array_equal(decoded, embed_direct(midnight.predict_url, [data],
                                                        "segmentation")[0])
