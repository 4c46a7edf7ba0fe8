"""The SAFE challenge API (Image Edit Detection and Localization Challenge 2025).

Request:  {"image": {"mediaType": "image/jpeg" | "image/png", "data": "<base64>"}}
Response: {"logprobs": [4 floats], "localizationMask": {"mediaType": "image/png", "data": "<b64>"}}
Labels: Natural=0, FullySynthesized=1, LocallyEdited=2, LocallySynthesized=3.
Top-level fields other than "image" are ignored (the challenge may add metadata).
"""

import dataclasses
import math
from typing import Any, Dict

import numpy as np
from PIL import Image

from vfm_serving.errors import InvalidRequest, MediaTypeMismatch, MissingImage
from vfm_serving.inputs.base64_data import decode_base64
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.outputs.masks import mask_to_base64_png
from vfm_serving.settings import ServingSettings

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/png": "PNG"}


@dataclasses.dataclass(frozen=True)
class SafeRequest:
    """A validated request: the encoded bytes and the PIL format they must be."""

    data: bytes
    expected_format: str


def parse_request(body: Any, settings: ServingSettings) -> SafeRequest:
    """Validate the body and decode the base64 (no pixel decoding yet).

    Raises:
        InvalidRequest (body/image not objects, fields mistyped), MissingImage (no image/data),
        MediaTypeMismatch (mediaType missing or not jpeg/png), InvalidBase64, ImageTooLarge.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    image = body.get("image")
    if image is None:
        raise MissingImage('request needs "image": {"mediaType": ..., "data": ...}')
    if not isinstance(image, dict):
        raise InvalidRequest('"image" must be an object with "mediaType" and "data"')
    media_type = image.get("mediaType")
    if not isinstance(media_type, str):
        raise MediaTypeMismatch('"image.mediaType" must be "image/jpeg" or "image/png"')
    fmt = MEDIA_TYPES.get(media_type.strip().lower())
    if fmt is None:
        raise MediaTypeMismatch(f"unsupported mediaType {media_type[:40]!r}; "
                                "use image/jpeg or image/png")
    data = image.get("data")
    if data is None:
        raise MissingImage('"image.data" (base64) is missing')
    return SafeRequest(data=decode_base64(data, settings.max_image_bytes), expected_format=fmt)


def decode_image(request: SafeRequest, settings: ServingSettings) -> Image.Image:
    """Decode the bytes as the declared format into RGB within the limits, in the STORED pixel
    layout (EXIF orientation undone): the mask must be aligned with the file's own pixel array,
    width x height as in its header, like the challenge's reference decoder (plain PIL open).

    Returns:
        RGB PIL image of the header's (W, H).

    Raises:
        MediaTypeMismatch, ImageDecodeError, ImageTooLarge, InvalidImageGeometry.
    """
    return decode_rgb(request.data, settings, expected_format=request.expected_format,
                      apply_exif_orientation=False)


def build_response(logprobs: np.ndarray, mask: np.ndarray) -> Dict[str, Any]:
    """logprobs [4] (finite, normalized) and binary mask [H, W] -> the SAFE response body.

    Raises:
        ValueError: logprobs not 4 finite numbers (a model bug, reported as 500).
    """
    values = [float(v) for v in np.asarray(logprobs, dtype=np.float64).reshape(-1)]
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError("detector returned invalid logprobs")
    return {"logprobs": values,
            "localizationMask": {"mediaType": "image/png", "data": mask_to_base64_png(mask)}}
