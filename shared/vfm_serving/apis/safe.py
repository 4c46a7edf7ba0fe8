"""The SAFE challenge API (Image Edit Detection and Localization Challenge 2025).

Request:  {"image": {"mediaType": "image/jpeg" | "image/png", "data": "<base64>"}}
Response: {"logprobs": [4 floats], "localizationMask": {"mediaType": "image/png", "data": "<b64>"}}
Labels: Natural=0, FullySynthesized=1, LocallyEdited=2, LocallySynthesized=3.
Top-level fields other than "image" are ignored (the challenge may add metadata).
"""

import dataclasses
import math
from typing import Any, Dict, List

import numpy as np

from vfm_serving.errors import InvalidRequest, MediaTypeMismatch, MissingImage
from vfm_serving.inputs.sources import BASE64, ImageSource
from vfm_serving.outputs.masks import mask_to_base64_png
from vfm_serving.serving import ItemResult, ParsedRequest

MEDIA_TYPES = {"image/jpeg": "JPEG", "image/jpg": "JPEG", "image/png": "PNG"}


@dataclasses.dataclass(frozen=True)
class SafeOptions:
    """The PIL format the bytes must be (from `mediaType`)."""

    expected_format: str


class SafeApi:
    """Parses SAFE requests (one image each) and shapes their responses."""

    def parse(self, body: Any) -> ParsedRequest:
        """Validate the body; the base64 is decoded later, with the image.

        Raises:
            InvalidRequest (body/image not objects), MissingImage (no image/data),
            MediaTypeMismatch (mediaType missing or not jpeg/png).
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
        return ParsedRequest(items=[ImageSource(BASE64, data)], batch_cap=None, fail_fast=True,
                             options=SafeOptions(fmt))

    def respond(self, request: ParsedRequest, results: List[ItemResult]) -> Dict[str, Any]:
        """The detection of the one image -> {"logprobs", "localizationMask"}."""
        detection = results[0].value
        return build_response(detection.logprobs, detection.mask)


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
