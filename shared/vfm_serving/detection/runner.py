"""The SAFE detector as a pipeline runner (vfm_serving.serving.Runner).

    prepare: encoded bytes -> decode as the declared format, stored pixel layout (EXIF orientation
             not applied: the mask must align with the file's own pixel array, like the
             challenge's reference decoder) -> Detector.prepare (windows + CPU statistics)
    forward: PreparedImages of concurrent requests -> Detector.detect_batch (one backbone pass)
"""

from typing import Any, List

import numpy as np
from PIL import Image

from vfm_serving.detection.detector import Detection, Detector, PreparedImage
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings


class DetectionRunner:
    """Runner for the SAFE edit detector; one item = one image (all its windows)."""

    def __init__(self, detector: Detector, settings: ServingSettings, max_images_per_pass: int
                 ) -> None:
        self.detector = detector
        self.settings = settings
        self.optimal_batch_size = max_images_per_pass

    def prepare(self, data: bytes, request: Any) -> PreparedImage:
        """Raises MediaTypeMismatch, ImageDecodeError, ImageTooLarge, InvalidImageGeometry."""
        image = decode_rgb(data, self.settings, expected_format=request.options.expected_format,
                           apply_exif_orientation=False)
        return self.detector.prepare(image)

    def forward(self, items: List[PreparedImage]) -> List[Detection]:
        """One backbone pass over every item's windows, heads per item."""
        return self.detector.detect_batch(items)

    def golden_item(self) -> PreparedImage:
        """A fixed 320x240 gradient image."""
        y, x = np.mgrid[0:240, 0:320]
        pixels = np.stack([x * 255 // 320, y * 255 // 240, (x * y) % 256], axis=-1)
        return self.detector.prepare(Image.fromarray(pixels.astype(np.uint8)))

    def health_vector(self, output: Detection) -> np.ndarray:
        """The calibrated log-probabilities."""
        return np.asarray(output.logprobs)
