"""Midnight's REST contract through the real Truss server on 127.0.0.1."""

import base64

import numpy as np
import pytest
import requests

from images_for_tests import b64, encode, photo
from test_midnight_numerics import reference_embeddings

FIELDS = {"embeddings", "embedding_shape", "task", "model_id", "input_size", "actual_batch_size",
          "requested_batch_size", "optimal_batch_size", "gpu_memory_gb", "encoding_format",
          "embedding_dtype"}


@pytest.fixture(scope="module")
def midnight(truss_server_factory):
    return truss_server_factory("midnight", env={"VFM_MAX_IMAGES_PER_REQUEST": "24",
                                                 "VFM_MAX_BATCH_SIZE": "8",
                                                 "VFM_FETCH_TIMEOUT_S": "3",
                                                 "VFM_MAX_IMAGE_BYTES": "3000000",
                                                 "VFM_MAX_IMAGE_PIXELS": "4000000"})


@pytest.fixture(scope="module")
def checkpoint():
    from tools.manifest import prepare_standin

    return prepare_standin("midnight")["MIDNIGHT_CHECKPOINT"]


@pytest.fixture(scope="module")
def png():
    return encode(photo("astronaut", (256, 256)), "PNG")


def embed(server, body):
    response = server.predict(body)
    assert response.status_code == 200, response.text
    return response.json()


def test_every_input_form_gives_the_same_embedding(midnight, loopback_files, png):
    url = loopback_files.add("/forms/astronaut.png", png, content_type="image/png")
    bodies = {
        "image_url": {"image_url": url},
        "image_base64 raw": {"image_base64": b64(png)},
        "image_base64 data URL": {"image_base64": "data:image/png;base64," + b64(png)},
        "image_base64 wrapped at 76 cols": {"image_base64": base64.encodebytes(png).decode()},
        "image_urls": {"image_urls": [url]},
        "image_base64_list": {"image_base64_list": ["data:image/png;base64," + b64(png)]},
    }
    results = {name: embed(midnight, {**body, "task": "classification"})
               for name, body in bodies.items()}
    first = np.asarray(results["image_url"]["embeddings"])
    for name, body in results.items():
        assert set(body) == FIELDS, name
        assert body["embedding_shape"] == [1, 64], name  # stand-in hidden 32 -> 2 x 32
        np.testing.assert_array_equal(np.asarray(body["embeddings"]), first, err_msg=name)


def test_response_fields(midnight, png):
    body = embed(midnight, {"image_base64_list": [b64(png)] * 3, "batch_size": 2})
    assert body["task"] == "classification"  # the default task
    assert "STAND-IN" in body["model_id"]
    assert body["input_size"] == 224
    assert body["requested_batch_size"] == 2
    assert body["actual_batch_size"] == 2
    # Computed from free memory, capped by VFM_MAX_BATCH_SIZE: this machine's RAM fits far more
    # than 8 stand-in images, so the cap decides.
    assert body["optimal_batch_size"] == 8
    assert body["gpu_memory_gb"] is None  # served on CPU here
    assert body["embedding_shape"] == [3, 64]


def test_batch_size_above_cap_is_lowered_not_rejected(midnight, png):
    body = embed(midnight, {"image_base64_list": [b64(png)] * 10, "batch_size": 1000})
    assert body["requested_batch_size"] == 1000
    assert body["actual_batch_size"] == 8  # VFM_MAX_BATCH_SIZE
    assert body["embedding_shape"][0] == 10


def test_segmentation_grid(midnight, png):
    body = embed(midnight, {"image_base64": b64(png), "task": "segmentation"})
    assert body["embedding_shape"] == [1, 32, 16, 16]
    assert np.asarray(body["embeddings"]).shape == (1, 32, 16, 16)


def test_twenty_images_in_order_with_batch_size_4(midnight, loopback_files, checkpoint):
    names = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
    images = [photo(names[i % 5], (200 + 13 * i, 260 - 5 * i)) for i in range(20)]
    urls = [loopback_files.add(f"/twenty/{i}.jpg", encode(im, "JPEG", quality=92),
                               content_type="image/jpeg") for i, im in enumerate(images)]
    body = embed(midnight, {"image_urls": urls, "task": "classification", "batch_size": 4})
    assert body["embedding_shape"] == [20, 64]
    assert body["actual_batch_size"] == 4
    served = np.asarray(body["embeddings"], dtype=np.float32)
    from io import BytesIO

    from PIL import Image
    decoded = [Image.open(BytesIO(loopback_files.files[f"/twenty/{i}.jpg"][1])).convert("RGB")
               for i in range(20)]
    expected = reference_embeddings(checkpoint, decoded, "classification")
    np.testing.assert_allclose(served, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("PNG", "RGBA"), ("PNG", "L"),
                                      ("TIFF", "RGB"), ("WEBP", "RGB"), ("GIF", "P"),
                                      ("BMP", "RGB"), ("PNG", "I;16")])
def test_pil_formats_and_modes(midnight, fmt, mode):
    image = photo("coffee", (240, 180))
    if mode == "I;16":
        image = image.convert("L").point(lambda v: v * 256).convert("I;16")
    elif mode != "RGB":
        image = image.convert(mode)
    body = embed(midnight, {"image_base64": b64(encode(image, fmt))})
    assert body["embedding_shape"] == [1, 64]
    assert np.isfinite(np.asarray(body["embeddings"])).all()


def bad_requests(loopback_files, png):
    missing_url = loopback_files.base + "/does/not/exist.png"
    not_image = loopback_files.add("/bad/not-an-image.png", b"hello, not an image")
    huge = loopback_files.add("/bad/huge.bin", b"\0" * 3_100_000)
    return [
        ("no image field", {"task": "classification"}, "missing_image"),
        ("body is a list", [1, 2], "invalid_request"),
        ("body is a string", "image", "invalid_request"),
        ("two image fields", {"image_url": "http://x/a.png", "image_base64": b64(png)},
         "conflicting_inputs"),
        ("unknown field", {"image_base64": b64(png), "imagee": 1}, "invalid_request"),
        ("image_url not a string", {"image_url": 5}, "invalid_request"),
        ("image_urls not a list", {"image_urls": "http://x/a.png"}, "invalid_request"),
        ("image_urls empty", {"image_urls": []}, "invalid_request"),
        ("image_base64_list with a number", {"image_base64_list": [b64(png), 3]},
         "invalid_request"),
        ("bad base64", {"image_base64": "not base64 at all!!"}, "invalid_base64"),
        ("bad data URL", {"image_base64": "data:image/png,abc"}, "invalid_base64"),
        ("empty base64", {"image_base64": ""}, "invalid_base64"),
        ("undecodable bytes", {"image_base64": b64(b"\x89PNG\r\n\x1a\n garbage")},
         "image_decode_failed"),
        ("truncated image", {"image_base64": b64(png[: len(png) // 2])}, "image_decode_failed"),
        ("unsupported task", {"image_base64": b64(png), "task": "detection"}, "unsupported_task"),
        ("batch_size zero", {"image_base64": b64(png), "batch_size": 0}, "invalid_batch_size"),
        ("batch_size string", {"image_base64": b64(png), "batch_size": "4"},
         "invalid_batch_size"),
        ("batch_size bool", {"image_base64": b64(png), "batch_size": True}, "invalid_batch_size"),
        ("ftp URL", {"image_url": "ftp://example.com/a.png"}, "url_scheme_not_allowed"),
        ("file URL", {"image_url": "file:///etc/passwd"}, "url_scheme_not_allowed"),
        ("relative URL", {"image_url": "/a.png"}, "invalid_url"),
        ("URL 404", {"image_url": missing_url}, "fetch_failed"),
        ("URL refused", {"image_url": "http://127.0.0.1:9/a.png"}, "fetch_failed"),
        ("URL not an image", {"image_url": not_image}, "image_decode_failed"),
        ("URL body too large", {"image_url": huge}, "image_too_large"),
        ("too many images", {"image_base64_list": [b64(png)] * 25}, "too_many_images"),
        ("one bad image among good ones", {"image_base64_list": [b64(png), "!!", b64(png)]},
         "invalid_base64"),
        ("decompression bomb", {"image_base64": b64(encode(
            __import__("PIL.Image", fromlist=["Image"]).new("L", (4000, 4000))))},
         "image_too_large"),
    ]


def test_bad_inputs_get_400_with_code_and_server_keeps_serving(midnight, loopback_files, png):
    failures = []
    for name, body, code in bad_requests(loopback_files, png):
        response = midnight.predict(body)
        error = response.json().get("error") if response.headers.get(
            "content-type", "").startswith("application/json") else None
        if response.status_code != 400 or not isinstance(error, dict) or error["code"] != code \
                or not error.get("message"):
            failures.append((name, response.status_code, response.text[:200]))
    assert not failures, failures
    # The message names the offending item of a list.
    response = midnight.predict({"image_base64_list": [b64(png), "!!"]})
    assert "image_base64_list[1]" in response.json()["error"]["message"]
    # Still healthy and serving.
    assert requests.get(midnight.url + "/v1/models/model", timeout=5).status_code == 200
    assert embed(midnight, {"image_base64": b64(png)})["embedding_shape"] == [1, 64]


def test_non_json_body_is_400(midnight):
    response = requests.post(midnight.predict_url, data=b"{not json",
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert response.status_code == 400


def test_concurrent_requests_each_get_their_own_embeddings(midnight, checkpoint):
    """Parallel requests (preprocess runs outside the predict lock) never mix up images."""
    from concurrent.futures import ThreadPoolExecutor

    names = ["astronaut", "coffee", "chelsea", "rocket", "camera", "cat"]
    images = [photo(n, (240, 200)) for n in names]
    bodies = [{"image_base64_list": [b64(encode(images[i])), b64(encode(images[(i + 1) % 6]))],
               "batch_size": 1} for i in range(6)]
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(midnight.predict, bodies))
    expected = reference_embeddings(checkpoint, images, "classification")
    for i, response in enumerate(responses):
        assert response.status_code == 200, response.text
        served = np.asarray(response.json()["embeddings"], dtype=np.float32)
        np.testing.assert_allclose(served, expected[[i, (i + 1) % 6]], atol=1e-5, rtol=0)
