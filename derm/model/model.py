"""Google Derm Foundation Truss: Vertex-compatible API, per-instance errors, batched SavedModel.

preprocess (no concurrency limit): validate the request (400 on a malformed one), then per
    instance: source check, base64 decode or GCS download, PIL decode check -> bytes | error
predict (predict_concurrency):     micro-batched SavedModel calls with per-instance fallback ->
    {"predictions": [...], "deployedModelId", "model", "modelVersionId", "modelDisplayName",
     "metadata"}
"""

import dataclasses
import logging
import os
import time
from typing import Any, Dict, List, Optional

from fastapi.responses import JSONResponse

from vfm_serving.apis import vertex_derm as api
from vfm_serving.errors import ServingError
from vfm_serving.settings import ServingSettings
from vfm_serving.tf_savedmodel.derm import CallStats, DermSavedModel, embed_with_fallback, load_derm

log = logging.getLogger(__name__)


def error_response(err: ServingError) -> JSONResponse:
    """Map a typed error to HTTP: client mistakes -> 400, the rest -> 500; body carries the code."""
    return JSONResponse(status_code=400 if err.client_error else 500,
                        content={"error": err.to_dict()})


@dataclasses.dataclass
class Prepared:
    """preprocess -> predict: per instance, the image bytes or its error; preprocess seconds."""

    items: List[api.Prepared]
    seconds: float


class Model:
    def __init__(self, config: Dict[str, Any], **kwargs: Any) -> None:
        self._meta = config["model_metadata"]
        self._settings = ServingSettings.from_env()
        self._model: Optional[DermSavedModel] = None
        self._identity: Optional[api.VertexIdentity] = None

    def load(self) -> None:
        """Load DERM_SAVEDMODEL_DIR if set, else the pre-cached weights; probe batching."""
        directory = os.environ.get("DERM_SAVEDMODEL_DIR", "").strip() or self._meta["weights_dir"]
        self._model = load_derm(directory, model_id=self._meta["hf_model_id"],
                                max_batch=self._settings.max_batch_size)
        self._identity = self._vertex_identity(self._model)

    def _vertex_identity(self, model: DermSavedModel) -> api.VertexIdentity:
        """The response's model fields; a stand-in says so in `model` and `modelDisplayName`."""
        deployed = os.environ.get("DERM_DEPLOYED_MODEL_ID", "").strip() \
            or self._meta["deployed_model_id"]
        if model.is_standin:
            return api.VertexIdentity(deployed, model.model_id, "stand-in",
                                      f"STAND-IN for {self._meta['model_display_name']}")
        return api.VertexIdentity(deployed, model.model_id, str(self._meta["hf_revision"]),
                                  self._meta["model_display_name"])

    def preprocess(self, body: Any) -> Any:
        """Malformed request -> 400 JSONResponse; else every instance's bytes or error."""
        started = time.perf_counter()
        try:
            instances = api.parse_instances(body, self._settings)
        except ServingError as err:
            log.info("rejected request: %s", err.code)
            return error_response(err)
        items = api.prepare_instances(instances, self._settings)
        return Prepared(items=items, seconds=time.perf_counter() - started)

    def predict(self, prepared: Any) -> Any:
        """Embed the valid instances (micro-batched, with fallback); shape the Vertex response."""
        if isinstance(prepared, JSONResponse):
            return prepared
        model, started = self._model, time.perf_counter()
        valid = [i for i, item in enumerate(prepared.items) if isinstance(item, bytes)]
        stats = CallStats()
        embedded = embed_with_fallback(model, [prepared.items[i] for i in valid], stats)
        results: List[Any] = list(prepared.items)
        for index, result in zip(valid, embedded):
            results[index] = result
        failed = sum(isinstance(r, ServingError) for r in results)
        metadata = {"stand_in": model.is_standin, "instances": len(results),
                    "succeeded": len(results) - failed, "failed": failed,
                    "micro_batch_size": model.max_batch, **dataclasses.asdict(stats),
                    "preprocess_seconds": round(prepared.seconds, 4),
                    "model_seconds": round(time.perf_counter() - started, 4)}
        log.info("request: %d instances, %d failed, %d model calls (%d fallbacks)",
                 len(results), failed, stats.model_calls, stats.per_instance_fallbacks)
        return api.build_response(results, self._identity, metadata)
