"""Classic forensic maps (vfm_serving.detection.forensics) on real photos with known edits."""

import io
from typing import Tuple

import cv2
import numpy as np
import pytest
from PIL import Image

from tools.sample_photos import photo_array
from vfm_serving.detection.forensics import (
    BLOCK,
    FORENSIC_NAMES,
    GREY_SPREAD,
    block_maps,
    copy_move_maps,
    forensic_maps,
    sample_at,
)


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _copy_moved(name: str) -> np.ndarray:
    """Photo with a 100 x 120 block copied from (50, 60) to (250, 300), then JPEG 90."""
    rgb = photo_array(name).copy()
    rgb[250:350, 300:420] = rgb[50:150, 60:180]
    return _jpeg(rgb, 90)


@pytest.mark.parametrize("name", [
    pytest.param("flower", marks=pytest.mark.xfail(
        reason="the copied block is smooth out-of-focus background: too few SIFT keypoints for "
               "the keypoint detector (the old dense-descriptor detector found it)",
        strict=True)),
    "china"])
def test_copy_move_marks_source_and_target_not_the_rest(name):
    match = copy_move_maps(_copy_moved(name))[0]
    h, w = match.shape
    scale = max(h, w) / max(photo_array(name).shape[:2])

    def frac(y0: int, y1: int, x0: int, x1: int) -> float:
        box = match[int(y0 * scale):int(y1 * scale), int(x0 * scale):int(x1 * scale)]
        return float((box > 0.5).mean())

    assert frac(250, 350, 300, 420) >= 0.25 and frac(50, 150, 60, 180) >= 0.25
    outside = np.ones_like(match, bool)
    outside[int(40 * scale):int(160 * scale), int(50 * scale):int(190 * scale)] = False
    outside[int(240 * scale):int(360 * scale), int(290 * scale):int(430 * scale)] = False
    assert float((match[outside] > 0.5).mean()) <= 0.03


@pytest.mark.parametrize("name", ["china", "flower", "grace_hopper", "aero"])
def test_copy_move_leaves_natural_photos_mostly_clean(name):
    assert float((copy_move_maps(photo_array(name))[0] > 0.5).mean()) <= 0.05


def _transformed_copy(name: str, angle: float, scale: float, quality: int
                      ) -> Tuple[np.ndarray, np.ndarray]:
    """Photo with an elliptic region pasted from elsewhere, rotated by `angle` degrees and
    scaled by `scale`, then JPEG `quality` -> (uint8 rgb [H, W, 3], bool target mask [H, W])."""
    rgb = photo_array(name)
    h, w = rgb.shape[:2]
    source = (0.3 * w, 0.3 * h)                     # (x, y) centres
    target = (0.7 * w, 0.68 * h)
    matrix = cv2.getRotationMatrix2D(source, angle, scale)
    matrix[:, 2] += np.subtract(target, source)     # source centre -> target centre
    moved = cv2.warpAffine(rgb, matrix, (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (int(target[0]), int(target[1])), (int(0.14 * w), int(0.12 * h)), 0, 0,
                360, 1, -1)
    out = np.where(mask[..., None] > 0, moved, rgb)
    return _jpeg(out, quality), mask > 0


def _target_iou(maps: np.ndarray, mask: np.ndarray) -> float:
    """IoU of (cm_match > 0.5 & cm_target >= 0.5), upscaled to the mask, with the mask."""
    size = mask.shape[::-1]
    match = cv2.resize(maps[0], size, interpolation=cv2.INTER_LINEAR) > 0.5
    target = match & (cv2.resize(maps[1], size, interpolation=cv2.INTER_LINEAR) >= 0.5)
    return float((target & mask).sum() / max((target | mask).sum(), 1))


@pytest.mark.parametrize("name,angle,scale", [
    ("chelsea", 15.0, 1.0), ("astronaut", -15.0, 1.0), ("chelsea", 0.0, 1.15),
    ("coffee", 0.0, 1.15), ("astronaut", 10.0, 1.15),
    ("chelsea", 0.0, 1.0), ("grace_hopper", 0.0, 1.0), ("china", 0.0, 1.0),
])  # measured target IoU 0.58-0.87; known misses: 'rocket' (too few keypoints), 'coffee'
#     rotated (pasted side misjudged at 15 deg, not found at 10 deg + 1.15x); plain shifts
#     (1.0x, 0 deg: the side is told by the seam alone) of chelsea and grace_hopper were left
#     undecided (IoU 0.41 / 0.34) by the rim measure alone; coffee, motorcycle, brick and some
#     opencv photos stay undecided or wrong
def test_copy_move_finds_rotated_and_scaled_copies(name, angle, scale):
    rgb, mask = _transformed_copy(name, angle, scale, quality=85)
    maps = copy_move_maps(rgb)
    assert maps.shape[0] == 2 and maps.dtype == np.float32
    assert _target_iou(maps, mask) >= 0.5


@pytest.mark.parametrize("name", ["chelsea", "coffee", "astronaut", "rocket", "camera"])
def test_copy_move_keeps_training_photos_clean(name):
    for rgb in (photo_array(name), _jpeg(photo_array(name), 75)):
        assert float((copy_move_maps(rgb)[0] > 0.5).mean()) <= 0.01


def test_jpeg_grid_misalignment_shows_a_shifted_splice():
    rgb = _jpeg(photo_array("china"), 70)
    shifted = _jpeg(np.roll(photo_array("flower"), (3, 5), axis=(0, 1)), 60)
    rgb = rgb.copy()
    rgb[120:280, 200:440] = np.roll(shifted, (-3, -5), axis=(0, 1))[120:280, 200:440]
    maps = forensic_maps(rgb)
    misalign = maps[FORENSIC_NAMES.index("jpeg_misalign")]
    inside = misalign[130 // BLOCK:270 // BLOCK, 210 // BLOCK:430 // BLOCK].mean()
    outside = np.concatenate([misalign[:100 // BLOCK].ravel(), misalign[300 // BLOCK:].ravel()])
    assert inside > np.median(outside) + 0.5


def test_colour_maps_follow_their_definition():
    """A greyscale left half (R = G = B) and a colour right half whose R, G, B spread is 30
    everywhere: away from the border between them, `grey_fraction` is 1 and 0, and `chroma`
    log(1 + 0) and log(1 + 30); a pixel of spread GREY_SPREAD still counts as grey, one more
    does not."""
    rng = np.random.default_rng(0)
    value = rng.integers(20, 200, size=(64, 128)).astype(np.int16)
    rgb = np.stack([value, value, value], axis=-1)
    rgb[:, 64:, 0] += 20
    rgb[:, 64:, 2] -= 10
    rgb[0:8, 0:8, 0] += GREY_SPREAD                 # block (0, 0): still grey
    rgb[0:8, 16:24, 0] += GREY_SPREAD + 1           # block (0, 2): not grey
    maps = block_maps(rgb.astype(np.uint8))
    grey, chroma = maps["grey_fraction"], maps["chroma"]
    assert grey.shape == chroma.shape == (8, 16)
    inner = slice(2, 6)
    np.testing.assert_allclose(grey[inner, 1:6], 1.0, atol=1e-6)
    np.testing.assert_allclose(grey[inner, 10:15], 0.0, atol=1e-6)
    np.testing.assert_allclose(chroma[inner, 1:6], 0.0, atol=1e-6)
    np.testing.assert_allclose(chroma[inner, 10:15], np.log(31.0), rtol=1e-5)
    # 3x3-block mean around block (0, 1): blocks (0..1, 0..2), clamped at the top edge
    # ("nearest"), so the row-0 blocks count twice: of the nine cells, block (0, 2) (not grey)
    # is two
    assert grey[0, 1] == pytest.approx(7 / 9, abs=1e-6)


def test_grey_region_pasted_into_a_colour_photo_stands_out_in_the_colour_maps():
    rgb = photo_array("coffee").copy()
    region = (slice(200, 328), slice(160, 352))
    grey = rgb[region].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    rgb[region] = np.clip(grey + 0.5, 0, 255).astype(np.uint8)[..., None]
    maps = block_maps(_jpeg(rgb, 95))
    inner = (slice(216 // BLOCK, 312 // BLOCK), slice(176 // BLOCK, 336 // BLOCK))
    outside = np.ones(maps["chroma"].shape, bool)
    outside[184 // BLOCK:344 // BLOCK, 144 // BLOCK:368 // BLOCK] = False
    assert maps["grey_fraction"][inner].min() > np.percentile(maps["grey_fraction"][outside], 95)
    assert maps["chroma"][inner].max() < np.percentile(maps["chroma"][outside], 5)


@pytest.mark.parametrize("shape", [(16, 16), (16, 40), (17, 23), (20, 300), (300, 16)])
def test_tiny_and_thin_images(shape):
    rgb = np.random.default_rng(0).integers(0, 256, shape + (3,), dtype=np.uint8)
    maps = forensic_maps(rgb)
    assert maps.shape == (len(FORENSIC_NAMES), shape[0] // BLOCK, shape[1] // BLOCK)
    assert np.isfinite(maps).all()


def test_maps_shape_and_sampling():
    rgb = photo_array("coffee")
    maps = forensic_maps(rgb)
    h, w = rgb.shape[:2]
    assert maps.shape == (len(FORENSIC_NAMES), h // BLOCK, w // BLOCK)
    assert np.isfinite(maps).all()
    values = sample_at(maps, np.array([0.0, h / 2, h - 1]), np.array([0.0, w / 2, w - 1]), (w, h))
    assert values.shape == (3, len(FORENSIC_NAMES))
    with pytest.raises(ValueError):
        forensic_maps(rgb[:8])
