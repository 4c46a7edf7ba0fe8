"""Google Derm Foundation Truss: where the SavedModel comes from, the Vertex API, the HTTP edge.

Everything else (body parsing, per-instance fetch and decode, dynamic batching, graph calls with
per-instance fallback, encoding, errors) is the shared pipeline: vfm_serving.serving.
"""

import os
from typing import Any, Dict, Optional

from starlette.requests import Request
from starlette.responses import Response

from vfm_serving.apis.vertex_derm import VertexDermApi, VertexIdentity
from vfm_serving.serving import ServingPipeline
from vfm_serving.settings import ServingSettings
from vfm_serving.tf_savedmodel.derm import DermRunner, DermSavedModel, load_derm


class Model:
    def __init__(self, config: Dict[str, Any], **kwargs: Any) -> None:
        self._meta = config["model_metadata"]
        self._pipeline: Optional[ServingPipeline] = None

    def load(self) -> None:
        """Load DERM_SAVEDMODEL_DIR if set, else the pre-cached weights; probe batching."""
        settings = ServingSettings.from_env()
        directory = os.environ.get("DERM_SAVEDMODEL_DIR", "").strip() or self._meta["weights_dir"]
        model = load_derm(directory, model_id=self._meta["hf_model_id"],
                          max_batch_size=settings.max_batch_size)
        api = VertexDermApi(settings, self._vertex_identity(model))
        self._pipeline = ServingPipeline("derm", api, DermRunner(model, settings), settings)
        self._pipeline.record_golden()

    def _vertex_identity(self, model: DermSavedModel) -> VertexIdentity:
        """The response's model fields; a stand-in says so in `model` and `modelDisplayName`."""
        deployed = os.environ.get("DERM_DEPLOYED_MODEL_ID", "").strip() \
            or self._meta["deployed_model_id"]
        name = self._meta["model_display_name"]
        version = "stand-in" if model.is_standin else str(self._meta["hf_revision"])
        display = f"STAND-IN for {name}" if model.is_standin else name
        return VertexIdentity(deployed, model.model_id, version, display, model.is_standin,
                              model.max_batch_size)

    async def predict(self, request: Request) -> Response:
        return await self._pipeline.handle(request)  # type: ignore[union-attr]

    def is_healthy(self) -> bool:
        return self._pipeline is not None and self._pipeline.healthy()
