"""Unit tests of vfm_serving pieces that need no server (settings, batching, base64, limits)."""

import base64

import pytest

from images_for_tests import encode, photo
from vfm_serving import errors
from vfm_serving.batching import micro_batches, resolve_batch_size
from vfm_serving.embeddings.preprocess import center_crop_box, resized_size
from vfm_serving.inputs.base64_data import decode_base64, split_data_url
from vfm_serving.inputs.http_fetch import validate_url
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings


def test_settings_from_env_overrides_defaults_and_validates():
    s = ServingSettings.from_env({"VFM_MAX_BATCH_SIZE": "16", "VFM_FETCH_TIMEOUT_S": "2.5",
                                  "VFM_ALLOW_PRIVATE_URLS": "yes"}, max_images_per_request=4)
    assert (s.max_batch_size, s.fetch_timeout_s, s.max_images_per_request) == (16, 2.5, 4)
    assert s.allow_private_urls is True and s.reduced_decode is True
    with pytest.raises(ValueError, match="VFM_MAX_BATCH_SIZE"):
        ServingSettings.from_env({"VFM_MAX_BATCH_SIZE": "lots"})
    with pytest.raises(ValueError, match="VFM_REDUCED_DECODE"):
        ServingSettings.from_env({"VFM_REDUCED_DECODE": "maybe"})
    with pytest.raises(ValueError, match="precision"):
        ServingSettings.from_env({"VFM_PRECISION": "int8"})
    with pytest.raises(ValueError, match="max_batch_size"):
        ServingSettings.from_env({"VFM_MAX_BATCH_SIZE": "0"})


@pytest.mark.parametrize("n,size", [(0, 3), (1, 3), (20, 4), (21, 4), (5, 10)])
def test_micro_batches_keep_every_item_in_order(n, size):
    chunks = list(micro_batches(list(range(n)), size))
    assert [x for c in chunks for x in c] == list(range(n))
    assert all(1 <= len(c) <= size for c in chunks)


def test_resolve_batch_size():
    assert resolve_batch_size(None, default=8, maximum=32) == 8
    assert resolve_batch_size(64, default=8, maximum=32) == 32
    for bad in (0, -1, 2.5, "4", True):
        with pytest.raises(errors.InvalidBatchSize):
            resolve_batch_size(bad, default=8, maximum=32)


def test_base64_forms():
    data = b"\x89PNG-ish bytes"
    text = base64.b64encode(data).decode()
    assert decode_base64(text, 100) == data
    assert decode_base64(f"data:image/png;base64,{text}", 100) == data
    assert decode_base64(text[:8] + "\n" + text[8:], 100) == data
    assert split_data_url("data:image/jpeg;base64,AAAA") == ("image/jpeg", "AAAA")
    with pytest.raises(errors.InvalidBase64):
        decode_base64(text[:-4] + "A", 100)  # a length no padding completes
    with pytest.raises(errors.ImageTooLarge):
        decode_base64(text, 5)


@pytest.mark.parametrize("url,ok", [("http://a/b.png", True), ("https://a.b:8/c?d", True),
                                    ("ftp://a/b", False), ("file:///x", False), ("//a/b", False),
                                    ("http://", False), ("", False)])
def test_validate_url(url, ok):
    if ok:
        assert validate_url(url) == url
    else:
        with pytest.raises(errors.InvalidUrl):
            validate_url(url)


def test_image_limits():
    settings = ServingSettings(max_image_pixels=10_000, min_image_side=4, max_aspect_ratio=8)
    assert decode_rgb(encode(photo("coffee", (100, 100))), settings).size == (100, 100)
    with pytest.raises(errors.ImageTooLarge):
        decode_rgb(encode(photo("coffee", (101, 100))), settings)
    with pytest.raises(errors.InvalidImageGeometry):
        decode_rgb(encode(photo("coffee", (3, 50))), settings)
    with pytest.raises(errors.InvalidImageGeometry):
        decode_rgb(encode(photo("coffee", (90, 10))), settings)
    with pytest.raises(errors.MediaTypeMismatch):
        decode_rgb(encode(photo("coffee", (50, 50)), "PNG"), settings, expected_format="JPEG")


@pytest.mark.parametrize("w,h", [(224, 224), (225, 300), (1000, 230), (230, 1000), (99, 101)])
def test_resize_and_crop_geometry_matches_torchvision_rules(w, h):
    nw, nh = resized_size(w, h, 224)
    assert min(nw, nh) == 224
    assert max(nw, nh) == int(224 * max(w, h) / min(w, h))
    left, top, right, bottom = center_crop_box(nw, nh, 224)
    assert (right - left, bottom - top) == (224, 224)
    assert left == int(round((nw - 224) / 2.0)) and top == int(round((nh - 224) / 2.0))


def test_every_error_code_is_unique_and_stable():
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.ServingError)]
    codes = [c.code for c in classes]
    assert len(codes) == len(set(codes))
    assert errors.ModelError.client_error is False
