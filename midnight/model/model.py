"""Kaiko Midnight Truss: where the weights come from, the Midnight API, the HTTP edge.

Everything else (body parsing, decode, dynamic batching, forward, encoding, errors) is the shared
pipeline: vfm_serving.serving.
"""

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from starlette.requests import Request
from starlette.responses import Response

from vfm_serving.apis.midnight import MidnightApi, ServedModel
from vfm_serving.embeddings.dinov2 import gpu_memory_gb, load_backbone
from vfm_serving.embeddings.embedder import DinoV2Embedder
from vfm_serving.serving import ServingPipeline
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)


class Model:
    def __init__(self, config: Dict[str, Any], secrets: Any, **kwargs: Any) -> None:
        self._meta = config["model_metadata"]
        self._secrets = secrets
        self._pipeline: Optional[ServingPipeline] = None

    def load(self) -> None:
        """Load the checkpoint in the served precision, warm up, record the golden answer."""
        settings = ServingSettings.from_env()
        source, revision, model_id = self._checkpoint()
        token = self._secrets["hf_access_token"] if revision else None
        backbone = load_backbone(
            source, input_size=self._meta["input_size"], mean=self._meta["normalize_mean"],
            std=self._meta["normalize_std"], model_id=model_id, revision=revision,
            token=token or None, precision=settings.precision)
        runner = DinoV2Embedder(backbone, settings)
        runner.warm_up()
        served = ServedModel(backbone.model_id, backbone.layout.input_size,
                             runner.optimal_batch_size, gpu_memory_gb(backbone.device))
        self._pipeline = ServingPipeline("midnight", MidnightApi(settings, served), runner,
                                         settings)
        self._pipeline.record_golden()

    def _checkpoint(self) -> Tuple[str, Optional[str], str]:
        """(source, hub revision or None, model_id to report): MIDNIGHT_CHECKPOINT, else the
        pre-cached weights, else the hub at the pinned revision."""
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

    async def predict(self, request: Request) -> Response:
        return await self._pipeline.handle(request)  # type: ignore[union-attr]

    def is_healthy(self) -> bool:
        return self._pipeline is not None and self._pipeline.healthy()
