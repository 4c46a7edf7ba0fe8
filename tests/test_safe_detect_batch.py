"""Detector.prepare / detect_batch: merging several images into one backbone pass gives each image
the same result as detecting it alone, in input order (shipped demo heads + stand-in backbone)."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from images_for_tests import photo
from vfm_serving.detection.detector import Detector, load_detector

SHIPPED = Path(__file__).resolve().parents[1] / "safe_detector" / "data"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return load_detector(SHIPPED, None, stride=168, max_windows=16, max_windows_per_forward=5)


def _images():
    return [photo("astronaut", (300, 220)), photo("coffee"), photo("camera", (224, 224)),
            photo("chelsea", (500, 260))]


def test_detect_batch_matches_detect_in_order(detector: Detector) -> None:
    images = _images()
    alone = [detector.detect(image) for image in images]
    merged = detector.detect_batch([detector.prepare(image) for image in images])
    assert len(merged) == len(images)
    for image, a, m in zip(images, alone, merged, strict=True):
        assert m.mask.shape == (image.height, image.width)
        np.testing.assert_allclose(m.logprobs, a.logprobs, atol=1e-5)
        torch.testing.assert_close(m.prob_map, a.prob_map, atol=1e-5, rtol=0)
        assert m.label == a.label


def test_prepare_is_thread_safe_and_has_no_backbone_call(detector: Detector) -> None:
    images = _images()
    with ThreadPoolExecutor(4) as pool:
        prepared = list(pool.map(detector.prepare, images))
    serial = [detector.prepare(image) for image in images]
    for p, s in zip(prepared, serial, strict=True):
        assert torch.equal(p.pixels, s.pixels) and torch.equal(p.stats, s.stats)
        assert p.num_windows == p.pixels.shape[0] == p.stats.shape[0]


def test_detect_batch_empty_and_bad_micro_batch(detector: Detector) -> None:
    assert detector.detect_batch([]) == []
    with pytest.raises(ValueError):
        Detector(detector.backbone, detector.heads, stride=168, max_windows=16,
                 max_windows_per_forward=0)
