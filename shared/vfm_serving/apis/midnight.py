"""The Midnight embedding API (reference: kaiko-ai/midnight on truss-examples), minus its defects.

Request (exactly one image field):
    image_url | image_base64 | image_urls | image_base64_list, task, batch_size,
    encoding_format ("float" | "base64"), embedding_dtype ("float32" | "float16")
Response:
    embeddings, embedding_shape, task, model_id, input_size, actual_batch_size,
    requested_batch_size, optimal_batch_size, gpu_memory_gb, encoding_format, embedding_dtype
"""

import dataclasses
from typing import Any, Dict, List, Optional

import numpy as np

from vfm_serving.apis.encoding import OutputEncoding, parse_output_encoding
from vfm_serving.batching import resolve_batch_size
from vfm_serving.errors import (
    ConflictingInputs,
    InvalidRequest,
    MissingImage,
    TooManyImages,
    UnsupportedTask,
)
from vfm_serving.inputs.sources import BASE64, URL, ImageSource
from vfm_serving.outputs.arrays import encode_items
from vfm_serving.serving import ItemResult, ParsedRequest
from vfm_serving.settings import ServingSettings

TASKS = ("classification", "segmentation")
SINGLE_FIELDS = {"image_url": URL, "image_base64": BASE64}
LIST_FIELDS = {"image_urls": URL, "image_base64_list": BASE64}
KNOWN_FIELDS = set(SINGLE_FIELDS) | set(LIST_FIELDS) | {"task", "batch_size", "encoding_format",
                                                        "embedding_dtype"}


@dataclasses.dataclass(frozen=True)
class MidnightOptions:
    """Per-request choices: pooling task, the client's batch_size, the output encoding."""

    task: str
    requested_batch_size: Optional[int]
    encoding: OutputEncoding


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """What the response reports about the loaded model."""

    model_id: str
    input_size: int
    optimal_batch_size: int
    gpu_memory_gb: Optional[float]


class MidnightApi:
    """Parses Midnight requests and shapes their responses."""

    def __init__(self, settings: ServingSettings, model: ServedModel) -> None:
        self.settings = settings
        self.model = model

    def parse(self, body: Any) -> ParsedRequest:
        """Validate a request body without touching any image.

        Raises:
            InvalidRequest (body not an object, unknown or mistyped field, bad encoding choice),
            MissingImage, ConflictingInputs (more than one image field), UnsupportedTask,
            InvalidBatchSize, TooManyImages (more than `max_images_per_request`).
        """
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object")
        unknown = sorted(str(k) for k in set(body) - KNOWN_FIELDS)
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
        present = [k for k in (*SINGLE_FIELDS, *LIST_FIELDS) if body.get(k) is not None]
        if not present:
            raise MissingImage("request needs one of: image_url, image_base64, image_urls, "
                               "image_base64_list")
        if len(present) > 1:
            raise ConflictingInputs(f"request has more than one image field: "
                                    f"{', '.join(present)}; send exactly one")
        task = body.get("task", "classification")
        if not isinstance(task, str) or task not in TASKS:
            raise UnsupportedTask(f"task must be one of {', '.join(TASKS)}")
        sources = _sources(present[0], body[present[0]])
        if len(sources) > self.settings.max_images_per_request:
            raise TooManyImages(f"{len(sources)} images in one request; the limit is "
                                f"{self.settings.max_images_per_request}")
        requested = body.get("batch_size")
        cap = resolve_batch_size(requested, default=self.model.optimal_batch_size,
                                 maximum=self.settings.max_batch_size)
        options = MidnightOptions(task, requested, parse_output_encoding(body))
        return ParsedRequest(items=sources, batch_cap=cap, fail_fast=True, options=options)

    def respond(self, request: ParsedRequest, results: List[ItemResult]) -> Dict[str, Any]:
        """Stack the per-image embeddings ([2D] or [D, g, g] each) into the response body."""
        options: MidnightOptions = request.options
        embeddings = np.stack([r.value for r in results])
        return {
            "embeddings": encode_items(embeddings, options.encoding.encoding_format,
                                       options.encoding.embedding_dtype),
            "embedding_shape": list(embeddings.shape),
            "task": options.task,
            "model_id": self.model.model_id,
            "input_size": self.model.input_size,
            "actual_batch_size": min(request.batch_cap or 1, len(results)),
            "requested_batch_size": options.requested_batch_size,
            "optimal_batch_size": self.model.optimal_batch_size,
            "gpu_memory_gb": self.model.gpu_memory_gb,
            "encoding_format": options.encoding.encoding_format,
            "embedding_dtype": options.encoding.embedding_dtype,
        }


def _sources(field: str, value: Any) -> List[ImageSource]:
    """Turn one image field into ordered sources; checks JSON types only."""
    if field in SINGLE_FIELDS:
        if not isinstance(value, str):
            raise InvalidRequest(f"{field} must be a string")
        return [ImageSource(SINGLE_FIELDS[field], value, field)]
    if not isinstance(value, list) or not value:
        raise InvalidRequest(f"{field} must be a non-empty list of strings")
    if not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{field} must contain only strings")
    return [ImageSource(LIST_FIELDS[field], v, f"{field}[{i}]") for i, v in enumerate(value)]
