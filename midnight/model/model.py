"""Kaiko Midnight Truss: parse the request, call vfm_serving, shape the response.

preprocess (no concurrency limit): validate + fetch/decode images  -> Prepared | 400 JSONResponse
predict (predict_concurrency):     micro-batched forward + pooling -> reference response body
"""

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from fastapi.responses import JSONResponse

from vfm_serving.apis import midnight as api
from vfm_serving.embeddings.dinov2 import Backbone, embed_images, load_backbone
from vfm_serving.errors import ServingError
from vfm_serving.inputs.sources import load_images
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)


def error_response(err: ServingError) -> JSONResponse:
    """Map a typed error to HTTP: client mistakes -> 400, the rest -> 500; body carries the code."""
    return JSONResponse(status_code=400 if err.client_error else 500,
                        content={"error": err.to_dict()})


class Model:
    def __init__(self, config: Dict[str, Any], secrets: Any, **kwargs: Any) -> None:
        self._meta = config["model_metadata"]
        self._secrets = secrets
        self._settings = ServingSettings.from_env()
        self._backbone: Optional[Backbone] = None

    def load(self) -> None:
        """Load from MIDNIGHT_CHECKPOINT, else the pre-cached weights, else the hub (pinned)."""
        source, revision, model_id = self._checkpoint()
        token = self._secrets["hf_access_token"] if revision else None
        self._backbone = load_backbone(
            source, input_size=self._meta["input_size"], mean=self._meta["normalize_mean"],
            std=self._meta["normalize_std"], model_id=model_id, revision=revision,
            token=token or None)

    def _checkpoint(self) -> Tuple[str, Optional[str], str]:
        """(source, hub revision or None, model_id to report)."""
        override = os.environ.get("MIDNIGHT_CHECKPOINT", "").strip()
        if override:
            return override, None, override
        hub_id = self._meta["hf_model_id"]
        cached = Path(self._meta["weights_dir"])
        if (cached / "config.json").is_file() and any(cached.glob("*.safetensors")):
            return str(cached), None, hub_id
        log.warning("no pre-cached weights in %s: downloading %s@%s", cached, hub_id,
                    self._meta["hf_revision"])
        return hub_id, self._meta["hf_revision"], hub_id

    def preprocess(self, body: Any) -> Any:
        """Validate and decode every image; a client mistake becomes a 400 response for predict."""
        try:
            request = api.parse_request(body, self._settings)
            return request, load_images(request.sources, self._settings)
        except ServingError as err:
            log.info("rejected request: %s", err.code)
            return error_response(err)

    def predict(self, prepared: Any) -> Any:
        """Embed every decoded image (micro-batched) and return the reference response body."""
        if isinstance(prepared, JSONResponse):
            return prepared
        request, images = prepared
        backbone = self._backbone
        embeddings = embed_images(backbone, images, request.task, request.batch_size)
        return api.build_response(
            embeddings, request, model_id=backbone.model_id,
            input_size=backbone.layout.input_size,
            optimal_batch_size=self._settings.default_batch_size,
            gpu_memory_gb=gpu_memory_gb(backbone.device))


def gpu_memory_gb(device: torch.device) -> Optional[float]:
    """Total memory of the serving GPU in GiB (1 decimal); None when serving on CPU."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
