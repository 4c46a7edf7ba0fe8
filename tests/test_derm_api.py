"""Derm Foundation's Vertex-compatible API through the real Truss server on 127.0.0.1.

GCS is a real emulator (gcp-storage-emulator) behind a real auth-checking front that records
headers; expected embeddings are the stand-in SavedModel's own output for the same bytes.
"""

import numpy as np
import pytest
import requests

from derm_helpers import (
    GcsAuthFront,
    GcsEmulator,
    StandInReference,
    poison_tiff,
    sample_images,
    tokens_in,
    truncated_png,
)
from images_for_tests import b64, encode, photo

GOOD_TOKEN = "ya29.derm-GOOD-token-7f3a9c"
WRONG_TOKEN = "ya29.derm-WRONG-token-1b2d4e"
PRIVATE, PUBLIC = "derm-private", "derm-public"

A = ("Failed to get prediction for instance. Reason: Request has more than one image input. "
     "Must specify either `input_bytes` or `gcs_uri`.")
B = ("Failed to get prediction for instance. Reason: Missing required `input_bytes` or `gcs_uri` "
     "key in request instance.")
C = "Failed to get prediction for instance. Reason: Failed to retrieve data from request instance."
E = "Internal error getting prediction for instance."
VERTEX_FIELDS = {"predictions", "deployedModelId", "model", "modelVersionId", "modelDisplayName",
                 "metadata"}


@pytest.fixture(scope="module")
def images():
    return sample_images()


@pytest.fixture(scope="module")
def gcs(images):
    emulator = GcsEmulator()
    front = GcsAuthFront(emulator.url, private={PRIVATE: GOOD_TOKEN})
    uris = {
        "private_png": emulator.upload(PRIVATE, "cases/2024/astronaut.png",
                                       images["chelsea_png"], "image/png"),
        "public_jpeg": emulator.upload(PUBLIC, "dir/sub dir/lesion 1.jpg",
                                       images["rocket_jpeg"], "image/jpeg"),
        "big_png": emulator.upload(PUBLIC, "big/noise.png", _noise_png(900, 900), "image/png"),
    }
    yield front, uris
    front.stop()
    emulator.stop()


def _noise_png(width, height):
    """Incompressible PNG (~3 bytes per pixel)."""
    from PIL import Image

    pixels = np.random.RandomState(0).randint(0, 256, (height, width, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


COMMON_ENV = {"VFM_MAX_IMAGES_PER_REQUEST": "12", "VFM_FETCH_TIMEOUT_S": "5",
              "VFM_MAX_IMAGE_BYTES": "2000000", "VFM_MAX_IMAGE_PIXELS": "1000000",
              "DERM_DEPLOYED_MODEL_ID": "derm-test-deployment"}


def start_derm(truss_server_factory, gcs, micro_batch: int):
    """A derm server reading gs:// through the test front, with forward passes of at most
    `micro_batch` images. The batcher waits up to 400 ms for a pass to fill, so the few images
    of one test request (decoded in parallel within milliseconds) share passes predictably."""
    front, _ = gcs
    return truss_server_factory("derm", env={**COMMON_ENV, "VFM_GCS_ENDPOINT": front.url,
                                             "VFM_MAX_BATCH_SIZE": str(micro_batch),
                                             "VFM_BATCH_MAX_WAIT_MS": "400"})


@pytest.fixture(scope="module")
def derm(truss_server_factory, gcs):
    return start_derm(truss_server_factory, gcs, 4)


@pytest.fixture(scope="module")
def derm_single(truss_server_factory, gcs):
    return start_derm(truss_server_factory, gcs, 1)


@pytest.fixture(scope="module")
def reference():
    from tools.manifest import prepare_standin

    return StandInReference(prepare_standin("derm")["DERM_SAVEDMODEL_DIR"])


def predict_ok(server, body):
    response = server.predict(body)
    assert response.status_code == 200, response.text[:2000]
    payload = response.json()
    assert set(payload) == VERTEX_FIELDS
    assert len(payload["predictions"]) == len(body["instances"])
    return payload


def assert_embedding(prediction, expected):
    assert set(prediction) == {"embedding"}, prediction
    got = np.asarray(prediction["embedding"], dtype=np.float32)
    assert got.shape == (6144,)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def assert_error(prediction, description, code):
    assert prediction == {"error": {"description": description, "code": code}}


def test_mixed_request_every_prediction_in_order(derm, gcs, images, reference):
    front, uris = gcs
    instances = [
        {"input_bytes": b64(images["astronaut_png"])},                              # 0 ok
        {"gcs_uri": uris["private_png"], "bearer_token": GOOD_TOKEN},               # 1 ok
        {"input_bytes": b64(truncated_png())},                                      # 2 E
        {"input_bytes": "not base64!"},                                             # 3 C
        {"input_bytes": b64(images["coffee_jpeg"]), "gcs_uri": uris["public_jpeg"]},  # 4 A
        {"extensions": {"key": "value"}},                                           # 5 B
        {"gcs_uri": f"gs://{PUBLIC}/does/not/exist.png"},                           # 6 C
        {"gcs_uri": uris["private_png"], "bearer_token": WRONG_TOKEN},              # 7 C
        {"gcs_uri": uris["public_jpeg"]},                                           # 8 ok, no token
        {"input_bytes": b64(images["coffee_jpeg"]), "bearer_token": WRONG_TOKEN,
         "extensions": {}},                                                         # 9 ok
        {"gcs_uri": "gs://Not_A_Bucket!/x.png"},                                    # 10 C
        {"gcs_uri": uris["private_png"]},                                           # 11 C, no token
    ]
    response = derm.predict({"instances": instances})
    assert response.status_code == 200, response.text[:2000]
    body = response.json()
    predictions = body["predictions"]
    assert len(predictions) == len(instances)
    assert_embedding(predictions[0], reference.embed(images["astronaut_png"]))
    assert_embedding(predictions[1], reference.embed(images["chelsea_png"]))
    assert_error(predictions[2], E, "image_decode_failed")
    assert_error(predictions[3], C, "invalid_base64")
    assert_error(predictions[4], A, "conflicting_inputs")
    assert_error(predictions[5], B, "missing_image")
    assert_error(predictions[6], C, "fetch_failed")
    assert_error(predictions[7], C, "fetch_failed")
    assert_embedding(predictions[8], reference.embed(images["rocket_jpeg"]))
    assert_embedding(predictions[9], reference.embed(images["coffee_jpeg"]))
    assert_error(predictions[10], C, "invalid_gcs_uri")
    assert_error(predictions[11], C, "fetch_failed")
    meta = body["metadata"]
    assert (meta["instances"], meta["succeeded"], meta["failed"]) == (12, 4, 8)
    assert meta["retried_alone"] == 0  # bad bytes were caught before the model
    # Tokens never leave the request: not in the response, not in the server log.
    assert tokens_in(response.text + derm.logs(), {GOOD_TOKEN, WRONG_TOKEN}) == set()


def test_bearer_token_reaches_the_storage_server(derm, gcs, images, reference):
    front, uris = gcs
    before = len(front.requests)
    body = predict_ok(derm, {"instances": [
        {"gcs_uri": uris["private_png"], "bearer_token": GOOD_TOKEN},
        {"gcs_uri": uris["public_jpeg"]}]})
    assert_embedding(body["predictions"][0], reference.embed(images["chelsea_png"]))
    assert_embedding(body["predictions"][1], reference.embed(images["rocket_jpeg"]))
    seen = dict(front.requests[before:])
    private_path = f"/download/storage/v1/b/{PRIVATE}/o/cases%2F2024%2Fastronaut.png?alt=media"
    public_path = f"/download/storage/v1/b/{PUBLIC}/o/dir%2Fsub%20dir%2Flesion%201.jpg?alt=media"
    assert set(seen) == {private_path, public_path}
    assert seen[private_path]["Authorization"] == f"Bearer {GOOD_TOKEN}"
    assert "Authorization" not in seen[public_path]  # anonymous when no token is given


def test_gcs_object_over_the_byte_limit_and_pixels_over_the_limit(derm, gcs):
    _, uris = gcs
    too_many_pixels = encode(photo("camera", (1100, 1000)), "PNG")
    body = predict_ok(derm, {"instances": [{"gcs_uri": uris["big_png"]},
                                           {"input_bytes": b64(too_many_pixels)}]})
    assert_error(body["predictions"][0], C, "image_too_large")
    assert_error(body["predictions"][1], C, "image_too_large")


def test_identity_fields_say_stand_in(derm, images):
    body = predict_ok(derm, {"instances": [{"input_bytes": b64(images["cat_webp"])}]})
    assert body["deployedModelId"] == "derm-test-deployment"
    assert "STAND-IN" in body["model"] and "NOT google/derm-foundation" in body["model"]
    assert body["modelDisplayName"].startswith("STAND-IN")
    assert body["modelVersionId"] == "stand-in"
    assert body["metadata"]["stand_in"] is True
    assert body["metadata"]["max_batch_size"] == 4


def test_batched_and_per_instance_give_the_same_embeddings(derm, derm_single, images, reference):
    instances = [{"input_bytes": b64(data)} for data in images.values()]  # 6 images
    batched = predict_ok(derm, {"instances": instances})
    single = predict_ok(derm_single, {"instances": instances})
    pairs = zip(batched["predictions"], single["predictions"], strict=True)
    for name, (got_b, got_s) in zip(images, pairs, strict=True):
        expected = reference.embed(images[name])
        assert_embedding(got_b, expected)
        assert_embedding(got_s, expected)
    # 6 images, at most 4 per pass: passes of 4 and 2; the single server: one per image.
    assert batched["metadata"]["forward_passes"] == 2
    assert batched["metadata"]["largest_forward_pass"] == 4
    assert single["metadata"]["max_batch_size"] == 1
    assert single["metadata"]["forward_passes"] == 6
    assert single["metadata"]["largest_forward_pass"] == 1


def test_poison_image_in_a_batch_falls_back_to_single_calls(derm, images, reference):
    poison = poison_tiff()
    names = ["astronaut_png", "coffee_jpeg", None, "chelsea_png"]  # one pass of 4
    instances = [{"input_bytes": b64(images[n] if n else poison)} for n in names]
    body = predict_ok(derm, {"instances": instances})
    for name, prediction in zip(names, body["predictions"], strict=True):
        if name is None:
            assert_error(prediction, E, "model_error")
        else:
            assert_embedding(prediction, reference.embed(images[name]))
    meta = body["metadata"]
    # The pass of 4 holding the poison failed and was re-run one image at a time: its 3 good
    # neighbours were retried alone and still got their own embeddings.
    assert (meta["succeeded"], meta["failed"]) == (3, 1)
    assert meta["forward_passes"] == 1 and meta["retried_alone"] == 3


def test_instance_cap(derm, images):
    tiny = b64(encode(photo("camera", (32, 32)), "PNG"))
    body = predict_ok(derm, {"instances": [{"input_bytes": tiny}] * 12})
    assert body["metadata"]["succeeded"] == 12
    response = derm.predict({"instances": [{"input_bytes": tiny}] * 13})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_images"


@pytest.mark.parametrize("body", [[{"input_bytes": "x"}], "instances", 3, {},
                                  {"instances": "abc"}, {"instances": {"input_bytes": "x"}},
                                  {"instances": []}, {"predictions": []}],
                         ids=["list", "string", "number", "no instances",
                              "instances string", "instances object", "empty list",
                              "wrong key"])
def test_malformed_requests_are_400(derm, body):
    response = derm.predict(body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize("raw", [b"{not json", b"", b"null"], ids=["not json", "empty", "null"])
def test_non_json_or_null_body_is_400_and_server_still_serves(derm, images, reference, raw):
    """Truss itself rejects what is not JSON; JSON `null` reaches us and is ours to reject."""
    response = requests.post(derm.predict_url, data=raw, timeout=30,
                             headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "error" in response.json()
    body = predict_ok(derm, {"instances": [{"input_bytes": b64(images["astronaut_png"])}]})
    assert_embedding(body["predictions"][0], reference.embed(images["astronaut_png"]))
