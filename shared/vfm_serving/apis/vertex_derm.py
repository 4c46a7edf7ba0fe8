"""The Derm Foundation API in Vertex AI's shape (Google-Health/derm-foundation), per instance.

Request:  {"instances": [{"input_bytes": <base64>} | {"gcs_uri": "gs://b/o.png",
           "bearer_token": <optional>}, ...],
           "parameters": {"encoding_format": "float" | "base64",
                          "embedding_dtype": "float32" | "float16"}}   (optional; "extensions" and
                          other parameters ignored)
Response: {"predictions": [{"embedding": [6144 floats] | "<base64>"} |
                           {"error": {"description", "code"}}],
           "deployedModelId", "model", "modelVersionId", "modelDisplayName", "metadata"}

Request-level mistakes raise (-> HTTP 400). Per-instance mistakes never raise: they become that
instance's error, the others go on. `description` is Google's client-facing wording (A-E in the
facts doc); `code` is our stable machine-readable code.
"""

import dataclasses
from typing import Any, Dict, List, Union

import numpy as np

from vfm_serving.apis.encoding import OutputEncoding, parse_output_encoding
from vfm_serving.errors import (
    ConflictingInputs,
    FetchFailed,
    ImageTooLarge,
    InvalidBase64,
    InvalidGcsUri,
    InvalidRequest,
    InvalidUrl,
    MissingImage,
    ServingError,
    TooManyImages,
)
from vfm_serving.inputs.sources import BASE64, GCS, ImageSource
from vfm_serving.outputs.arrays import encode_items
from vfm_serving.serving import ItemResult, ParsedRequest
from vfm_serving.settings import ServingSettings

INSTANCES = "instances"
INPUT_BYTES = "input_bytes"
GCS_URI = "gcs_uri"
BEARER_TOKEN = "bearer_token"
PARAMETERS = "parameters"

_PREFIX = "Failed to get prediction for instance. Reason: "
DESCRIPTION_CONFLICT = (_PREFIX + "Request has more than one image input. Must specify either "
                        "`input_bytes` or `gcs_uri`.")                                    # A
DESCRIPTION_MISSING = (_PREFIX + "Missing required `input_bytes` or `gcs_uri` key in request "
                       "instance.")                                                        # B
DESCRIPTION_RETRIEVE = _PREFIX + "Failed to retrieve data from request instance."          # C
DESCRIPTION_EXAMPLE = _PREFIX + "Failed to process image to TF example."                   # D
DESCRIPTION_INTERNAL = "Internal error getting prediction for instance."                   # E

# First matching class wins; anything else (decode, geometry, model, internal) -> E.
_DESCRIPTIONS = (
    (ConflictingInputs, DESCRIPTION_CONFLICT),
    (MissingImage, DESCRIPTION_MISSING),
    (InvalidBase64, DESCRIPTION_RETRIEVE),
    (InvalidGcsUri, DESCRIPTION_RETRIEVE),
    (InvalidUrl, DESCRIPTION_RETRIEVE),
    (FetchFailed, DESCRIPTION_RETRIEVE),
    (ImageTooLarge, DESCRIPTION_RETRIEVE),
    (InvalidRequest, DESCRIPTION_RETRIEVE),
)


@dataclasses.dataclass(frozen=True)
class VertexIdentity:
    """The four model fields Vertex adds to every response, and whether it is a stand-in."""

    deployed_model_id: str
    model: str
    model_version_id: str
    model_display_name: str
    stand_in: bool
    max_batch_size: int


class VertexDermApi:
    """Parses Vertex `instances` requests and shapes `predictions` responses."""

    def __init__(self, settings: ServingSettings, identity: VertexIdentity) -> None:
        self.settings = settings
        self.identity = identity

    def parse(self, body: Any) -> ParsedRequest:
        """Request-level checks, then one source (or error) per instance.

        Raises:
            InvalidRequest: body not a JSON object, `instances` missing, not a list, or empty
                (Google answers 200 with no predictions for []; we answer 400, see
                derm/README.md), `parameters` not an object or a bad encoding choice.
            TooManyImages: more than `settings.max_images_per_request` instances.
        """
        if not isinstance(body, dict):
            raise InvalidRequest("request body must be a JSON object with an `instances` list")
        if INSTANCES not in body:
            raise InvalidRequest("request body has no `instances` field")
        instances = body[INSTANCES]
        if not isinstance(instances, list):
            raise InvalidRequest("`instances` must be a list")
        if not instances:
            raise InvalidRequest("`instances` is empty: send at least one instance")
        if len(instances) > self.settings.max_images_per_request:
            raise TooManyImages(f"{len(instances)} instances in one request; the limit is "
                                f"{self.settings.max_images_per_request}")
        parameters = body.get(PARAMETERS) or {}
        if not isinstance(parameters, dict):
            raise InvalidRequest("`parameters` must be an object")
        items = [_instance_source(raw) for raw in instances]
        return ParsedRequest(items=items, batch_cap=None, fail_fast=False,
                             options=parse_output_encoding(parameters))

    def respond(self, request: ParsedRequest, results: List[ItemResult]) -> Dict[str, Any]:
        """The Vertex response: one prediction per instance, in request order."""
        encoding: OutputEncoding = request.options
        predictions = [error_prediction(r.value) if r.failed
                       else embedding_prediction(r.value.embedding, encoding) for r in results]
        batches = {r.batch.batch_id: r.batch.size for r in results if r.batch is not None}
        failed = sum(r.failed for r in results)
        identity = self.identity
        return {
            "predictions": predictions,
            "deployedModelId": identity.deployed_model_id,
            "model": identity.model,
            "modelVersionId": identity.model_version_id,
            "modelDisplayName": identity.model_display_name,
            "metadata": {
                "stand_in": identity.stand_in, "instances": len(results),
                "succeeded": len(results) - failed, "failed": failed,
                "max_batch_size": identity.max_batch_size,
                "forward_passes": len(batches),
                "largest_forward_pass": max(batches.values(), default=0),
                "retried_alone": sum(not r.failed and r.value.retried_alone for r in results),
                "encoding_format": encoding.encoding_format,
                "embedding_dtype": encoding.embedding_dtype,
            },
        }


def _instance_source(raw: Any) -> Union[ImageSource, ServingError]:
    """Which source an instance names, or its error. Keys count by presence
    (`"gcs_uri": null` is present): both -> ConflictingInputs (Google's A); neither, or not an
    object -> MissingImage (Google's B). `bearer_token` is ignored with `input_bytes`."""
    if not isinstance(raw, dict):
        return MissingImage("instance is not a JSON object with `input_bytes` or `gcs_uri`")
    if INPUT_BYTES in raw and GCS_URI in raw:
        return ConflictingInputs("instance has both `input_bytes` and `gcs_uri`")
    if INPUT_BYTES in raw:
        return ImageSource(BASE64, raw[INPUT_BYTES])
    if GCS_URI in raw:
        return ImageSource(GCS, raw[GCS_URI], bearer_token=raw.get(BEARER_TOKEN))
    return MissingImage("instance has neither `input_bytes` nor `gcs_uri`")


def error_prediction(err: ServingError) -> Dict[str, Any]:
    """{"error": {"description": <Google's wording>, "code": <our code>}} for one instance."""
    description = next((text for cls, text in _DESCRIPTIONS if isinstance(err, cls)),
                       DESCRIPTION_INTERNAL)
    return {"error": {"description": description, "code": err.code}}


def embedding_prediction(embedding: np.ndarray, encoding: OutputEncoding) -> Dict[str, Any]:
    """{"embedding": [floats] | "<base64>"} for one instance (float32 values by default)."""
    encoded = encode_items(np.asarray(embedding)[None], encoding.encoding_format,
                           encoding.embedding_dtype)[0]
    return {"embedding": encoded}
