"""The Derm Foundation API in Vertex AI's shape (Google-Health/derm-foundation serving), per instance.

Request:  {"instances": [{"input_bytes": <base64>} | {"gcs_uri": "gs://b/o.png",
           "bearer_token": <optional>}, ...]}            ("extensions", "parameters" ignored)
Response: {"predictions": [{"embedding": [6144 floats]} | {"error": {"description", "code"}}],
           "deployedModelId", "model", "modelVersionId", "modelDisplayName", "metadata"}

Request-level mistakes raise (-> HTTP 400). Per-instance mistakes never raise past
`prepare_instances`: they become that instance's error, the others go on. `description` is Google's
client-facing wording (A-E in the facts doc); `code` is our stable machine-readable code.
"""

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from vfm_serving.errors import (ConflictingInputs, ImageTooLarge, InternalError, InvalidBase64,
                                InvalidGcsUri, InvalidRequest, InvalidUrl, FetchFailed,
                                MissingImage, ServingError, TooManyImages)
from vfm_serving.inputs.base64_data import decode_base64
from vfm_serving.inputs.gcs import fetch_gcs
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)

INSTANCES = "instances"
INPUT_BYTES = "input_bytes"
GCS_URI = "gcs_uri"
BEARER_TOKEN = "bearer_token"

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

Prepared = Union[bytes, ServingError]


@dataclasses.dataclass(frozen=True)
class VertexIdentity:
    """The four model fields Vertex adds to every response."""

    deployed_model_id: str
    model: str
    model_version_id: str
    model_display_name: str


@dataclasses.dataclass(frozen=True)
class Instance:
    """One instance's image source. `bearer_token` is excluded from repr (never logged)."""

    kind: str  # INPUT_BYTES or GCS_URI
    value: Any
    bearer_token: Optional[str] = dataclasses.field(default=None, repr=False)


def parse_instances(body: Any, settings: ServingSettings) -> List[Any]:
    """The request's `instances` list, unchecked inside (that is per instance).

    Raises:
        InvalidRequest: body not a JSON object, `instances` missing, not a list, or empty
            (Google answers 200 with no predictions for []; we answer 400, see derm/README.md).
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
    if len(instances) > settings.max_images_per_request:
        raise TooManyImages(f"{len(instances)} instances in one request; the limit is "
                            f"{settings.max_images_per_request}")
    return instances



def classify_instance(raw: Any) -> Instance:
    """Which source an instance names. Keys count by presence (`"gcs_uri": null` is present).

    Raises:
        ConflictingInputs: both `input_bytes` and `gcs_uri` (Google's A).
        MissingImage: neither, or the instance is not a JSON object (Google's B).
    """
    if not isinstance(raw, dict):
        raise MissingImage("instance is not a JSON object with `input_bytes` or `gcs_uri`")
    if INPUT_BYTES in raw and GCS_URI in raw:
        raise ConflictingInputs("instance has both `input_bytes` and `gcs_uri`")
    if INPUT_BYTES in raw:
        return Instance(INPUT_BYTES, raw[INPUT_BYTES])  # bearer_token ignored, like Google
    if GCS_URI in raw:
        return Instance(GCS_URI, raw[GCS_URI], raw.get(BEARER_TOKEN))
    raise MissingImage("instance has neither `input_bytes` nor `gcs_uri`")


def instance_bytes(instance: Instance, settings: ServingSettings) -> bytes:
    """The encoded image bytes of one instance (base64-decoded or downloaded), unchanged.

    Raises:
        InvalidBase64, InvalidGcsUri, InvalidRequest (bad bearer_token), FetchFailed,
        ImageTooLarge.
    """
    if instance.kind == INPUT_BYTES:
        return decode_base64(instance.value, settings.max_image_bytes)
    return fetch_gcs(instance.value, instance.bearer_token, settings)


def prepare_instance(raw: Any, settings: ServingSettings) -> Prepared:
    """Bytes ready for the model, or the ServingError that instance gets. Never raises.

    The bytes are checked with a full PIL decode (pixel limit included) but returned as sent.
    """
    try:
        data = instance_bytes(classify_instance(raw), settings)
        decode_rgb(data, settings)
        return data
    except ServingError as err:
        return err
    except Exception as exc:  # noqa: BLE001 - one instance's bug must not fail the request
        log.exception("unexpected error preparing an instance")
        return InternalError(f"unexpected {type(exc).__name__} while preparing the instance")


def prepare_instances(instances: Sequence[Any], settings: ServingSettings) -> List[Prepared]:
    """`prepare_instance` for each, `fetch_concurrency` at a time; results in request order."""
    started = time.perf_counter()
    workers = max(1, min(settings.fetch_concurrency, len(instances)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="derm-prep") as pool:
        prepared = list(pool.map(lambda raw: prepare_instance(raw, settings), instances))
    failed = [p.code for p in prepared if isinstance(p, ServingError)]
    log.info("prepared %d instances in %.3fs (%d rejected: %s)", len(prepared),
             time.perf_counter() - started, len(failed), ", ".join(sorted(set(failed))) or "-")
    return prepared


def error_prediction(err: ServingError) -> Dict[str, Any]:
    """{"error": {"description": <Google's wording>, "code": <our code>}} for one instance."""
    description = next((text for cls, text in _DESCRIPTIONS if isinstance(err, cls)),
                       DESCRIPTION_INTERNAL)
    return {"error": {"description": description, "code": err.code}}


def embedding_prediction(embedding: np.ndarray) -> Dict[str, Any]:
    """{"embedding": [floats]}; float32 values widen exactly to JSON doubles."""
    return {"embedding": np.asarray(embedding, dtype=np.float32).tolist()}


def build_response(results: Sequence[Union[np.ndarray, ServingError]], identity: VertexIdentity,
                   metadata: Mapping[str, Any]) -> Dict[str, Any]:
    """The Vertex response: one prediction per instance, in request order."""
    predictions = [error_prediction(r) if isinstance(r, ServingError) else embedding_prediction(r)
                   for r in results]
    return {
        "predictions": predictions,
        "deployedModelId": identity.deployed_model_id,
        "model": identity.model,
        "modelVersionId": identity.model_version_id,
        "modelDisplayName": identity.model_display_name,
        "metadata": dict(metadata),
    }
