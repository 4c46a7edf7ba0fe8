"""The Midnight embedding API (reference: kaiko-ai/midnight on truss-examples), minus its defects.

Request (exactly one image field):
    image_url | image_base64 | image_urls | image_base64_list, task, batch_size
Response:
    embeddings, embedding_shape, task, model_id, input_size, actual_batch_size,
    requested_batch_size, optimal_batch_size, gpu_memory_gb
"""

import dataclasses
from typing import Any, Dict, List, Optional

import torch

from vfm_serving.batching import resolve_batch_size
from vfm_serving.embeddings.dinov2 import TASKS
from vfm_serving.errors import (ConflictingInputs, InvalidRequest, MissingImage, TooManyImages,
                                UnsupportedTask)
from vfm_serving.inputs.sources import ImageSource
from vfm_serving.outputs.json_arrays import to_json_list
from vfm_serving.settings import ServingSettings

SINGLE_FIELDS = {"image_url": "url", "image_base64": "base64"}
LIST_FIELDS = {"image_urls": "url", "image_base64_list": "base64"}
KNOWN_FIELDS = set(SINGLE_FIELDS) | set(LIST_FIELDS) | {"task", "batch_size"}


@dataclasses.dataclass(frozen=True)
class EmbeddingRequest:
    """A validated request: sources in order, task, micro-batch size actually used."""

    sources: List[ImageSource]
    task: str
    requested_batch_size: Optional[int]
    batch_size: int


def parse_request(body: Any, settings: ServingSettings) -> EmbeddingRequest:
    """Validate a request body without touching any image.

    Raises:
        InvalidRequest (body not an object, unknown or mistyped field), MissingImage,
        ConflictingInputs (more than one image field), UnsupportedTask, InvalidBatchSize,
        TooManyImages (more than `max_images_per_request`).
    """
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}")
    present = [k for k in (*SINGLE_FIELDS, *LIST_FIELDS) if body.get(k) is not None]
    if not present:
        raise MissingImage("request needs one of: image_url, image_base64, image_urls, "
                           "image_base64_list")
    if len(present) > 1:
        raise ConflictingInputs(f"request has more than one image field: {', '.join(present)}; "
                                "send exactly one")
    task = body.get("task", "classification")
    if task not in TASKS:
        raise UnsupportedTask(f"task must be one of {', '.join(TASKS)}")
    field = present[0]
    sources = _sources(field, body[field])
    if len(sources) > settings.max_images_per_request:
        raise TooManyImages(f"{len(sources)} images in one request; the limit is "
                            f"{settings.max_images_per_request}")
    requested = body.get("batch_size")
    batch_size = resolve_batch_size(requested, default=settings.default_batch_size,
                                    maximum=settings.max_batch_size)
    return EmbeddingRequest(sources=sources, task=task, requested_batch_size=requested,
                            batch_size=batch_size)


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


def build_response(embeddings: torch.Tensor, request: EmbeddingRequest, *, model_id: str,
                   input_size: int, optimal_batch_size: int,
                   gpu_memory_gb: Optional[float]) -> Dict[str, Any]:
    """Shape the reference response. `embeddings` is [N, 2D] or [N, D, g, g]."""
    return {
        "embeddings": to_json_list(embeddings),
        "embedding_shape": list(embeddings.shape),
        "task": request.task,
        "model_id": model_id,
        "input_size": input_size,
        "actual_batch_size": min(request.batch_size, int(embeddings.shape[0])),
        "requested_batch_size": request.requested_batch_size,
        "optimal_batch_size": optimal_batch_size,
        "gpu_memory_gb": gpu_memory_gb,
    }
