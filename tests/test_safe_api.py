"""SAFE detector contract through the real Truss server on 127.0.0.1 (shipped demo heads +
stand-in backbone from safe_detector/data)."""

import base64
import io
import math

import numpy as np
import pytest
import requests
from PIL import Image

from images_for_tests import b64, encode, photo

MAX_PIXELS = 4_000_000
MAX_BYTES = 3_000_000


@pytest.fixture(scope="module")
def safe(truss_server_factory):
    # Smaller limits than production so "beyond the limits" cases stay cheap to build.
    return truss_server_factory("safe_detector", env={"VFM_MAX_IMAGE_PIXELS": str(MAX_PIXELS),
                                                      "VFM_MAX_IMAGE_BYTES": str(MAX_BYTES)})


def body(data: bytes, media_type: str) -> dict:
    return {"image": {"mediaType": media_type, "data": b64(data)}}


def check_contract(response: requests.Response, size: tuple) -> tuple:
    """Assert the SAFE contract; return (label, mask [H, W])."""
    assert response.status_code == 200, response.text
    payload = response.json()
    assert set(payload) == {"logprobs", "localizationMask"}
    logprobs = payload["logprobs"]
    assert len(logprobs) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in logprobs)
    assert abs(math.log(sum(math.exp(v) for v in logprobs))) < 1e-9
    assert payload["localizationMask"]["mediaType"] == "image/png"
    png = Image.open(io.BytesIO(base64.b64decode(payload["localizationMask"]["data"],
                                                 validate=True)))
    assert png.format == "PNG"
    assert png.size == size  # exactly the input's width x height
    mask = np.asarray(png.convert("L"))
    assert set(np.unique(mask)) <= {0, 255} or set(np.unique(mask)) <= {0, 1}
    mask = (mask > 0).astype(np.uint8)
    label = int(np.argmax(logprobs))
    if label == 0:
        assert not mask.any(), "Natural must come with an all-zero mask"
    elif label == 1:
        assert mask.all(), "FullySynthesized: every pixel is synthesized"
    else:
        assert mask.any(), "a local label must come with a non-empty mask"
    return label, mask


@pytest.mark.parametrize("size,fmt", [((224, 224), "PNG"), ((451, 300), "JPEG"),
                                      ((300, 451), "PNG"), ((640, 427), "JPEG"),
                                      ((1000, 90), "PNG"), ((32, 32), "PNG"), ((16, 16), "JPEG"),
                                      ((256, 16), "PNG"), ((1900, 1300), "JPEG")])
def test_contract_for_several_sizes(safe, size, fmt):
    data = encode(photo("coffee", size), fmt)
    check_contract(safe.predict(body(data, "image/jpeg" if fmt == "JPEG" else "image/png")), size)


def test_labels_and_masks_agree_on_natural_and_edited_images(safe, tmp_path):
    """Synthetic edits (tools.safe.synth) and natural crops: every answer obeys the mask rule,
    and more than one label occurs, so the rule is exercised for more than one branch."""
    from tools.safe.synth import make_dataset

    rows = make_dataset(tmp_path, photos=("astronaut", "coffee", "rocket"), crops=1, seed=3)
    labels = set()
    for row in rows:
        image = Image.open(tmp_path / row["image"])
        label, _ = check_contract(safe.predict(body(encode(image, "PNG"), "image/png")),
                                  image.size)
        labels.add(label)
    assert len(labels) >= 2


def test_same_request_same_answer(safe):
    data = encode(photo("chelsea", (300, 200)), "JPEG")
    first, second = (safe.predict(body(data, "image/jpeg")).json() for _ in range(2))
    assert first == second


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16", "CMYK", "progressive", "exif6"])
def test_any_decodable_image_gets_an_answer(safe, mode):
    image = photo("astronaut", (200, 120))
    fmt, kwargs = "PNG", {}
    if mode == "CMYK":
        image, fmt = image.convert("CMYK"), "JPEG"
    elif mode == "progressive":
        fmt, kwargs = "JPEG", {"progressive": True}
    elif mode == "exif6":  # rotated by EXIF: the mask follows the STORED pixels (header size)
        exif = image.getexif()
        exif[0x0112] = 6
        fmt, kwargs = "JPEG", {"exif": exif}
    elif mode == "I;16":
        image = Image.fromarray((np.asarray(image.convert("L"), np.uint16) * 257))
    else:
        image = image.convert(mode)
    media = "image/jpeg" if fmt == "JPEG" else "image/png"
    check_contract(safe.predict(body(encode(image, fmt, **kwargs), media)), (200, 120))


def _png(size, noisy=False) -> bytes:
    w, h = size
    if noisy:
        array = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        return encode(Image.fromarray(array), "PNG")
    return encode(Image.new("RGB", size, (120, 30, 200)), "PNG")


PNG = encode(photo("coffee", (256, 192)), "PNG")
JPEG = encode(photo("coffee", (256, 192)), "JPEG")
BAD_INPUTS = {
    "missing image": ({"picture": 1}, "missing_image"),
    "image not an object": ({"image": "abc"}, "invalid_request"),
    "missing data": ({"image": {"mediaType": "image/png"}}, "missing_image"),
    "missing mediaType": ({"image": {"data": b64(PNG)}}, "media_type_mismatch"),
    "mediaType gif": (body(PNG, "image/gif"), "media_type_mismatch"),
    "mediaType not a string": ({"image": {"mediaType": 5, "data": b64(PNG)}},
                               "media_type_mismatch"),
    "PNG declared JPEG": (body(PNG, "image/jpeg"), "media_type_mismatch"),
    "JPEG declared PNG": (body(JPEG, "image/png"), "media_type_mismatch"),
    "bad base64": ({"image": {"mediaType": "image/png", "data": "@@not base64@@"}},
                   "invalid_base64"),
    "empty data": ({"image": {"mediaType": "image/png", "data": ""}}, "invalid_base64"),
    "data not a string": ({"image": {"mediaType": "image/png", "data": 42}}, "invalid_base64"),
    "undecodable bytes": (body(b"hello, not an image at all", "image/png"),
                          "image_decode_failed"),
    "truncated PNG": (body(PNG[: len(PNG) // 2], "image/png"), "image_decode_failed"),
    "truncated JPEG": (body(JPEG[: len(JPEG) // 2], "image/jpeg"), "image_decode_failed"),
    "1x1": (body(_png((1, 1)), "image/png"), "invalid_image_geometry"),
    "below min side 16": (body(_png((15, 40)), "image/png"), "invalid_image_geometry"),
    "aspect 20:1": (body(_png((1000, 50)), "image/png"), "invalid_image_geometry"),
    "too many pixels": (body(_png((2100, 2000)), "image/png"), "image_too_large"),
    "too many bytes": (body(_png((1100, 1000), noisy=True), "image/png"), "image_too_large"),
    "body is a list": ([1, 2], "invalid_request"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_400_with_code(safe, name):
    request, code = BAD_INPUTS[name]
    response = safe.predict(request)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == code


def test_body_that_is_not_json_is_400(safe):
    response = requests.post(safe.predict_url, data=b"{not json",
                             headers={"Content-Type": "application/json"}, timeout=60)
    assert response.status_code == 400


def test_server_reports_demo_heads_and_stand_in_backbone(safe):
    logs = safe.logs()
    assert "STAND-IN" in logs and "DEMO" in logs
    assert "Traceback" not in logs
