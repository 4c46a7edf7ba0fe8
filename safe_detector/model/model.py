"""SAFE edit detector Truss: where the heads and backbone come from, the SAFE API, the HTTP edge.

Everything else (body parsing, decode, windows, dynamic batching across requests, backbone pass,
heads, mask PNG, errors) is the shared pipeline: vfm_serving.serving.
"""

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional

from starlette.requests import Request
from starlette.responses import Response

from vfm_serving.apis.safe import SafeApi
from vfm_serving.detection.detector import load_detector
from vfm_serving.detection.heads import read_config
from vfm_serving.detection.runner import DetectionRunner
from vfm_serving.serving import ServingPipeline
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)


class Model:
    def __init__(self, config: Dict[str, Any], data_dir: Path, **kwargs: Any) -> None:
        self._meta = config["model_metadata"]
        self._data_dir = Path(data_dir)
        self._pipeline: Optional[ServingPipeline] = None

    def load(self) -> None:
        """Heads from SAFE_HEADS_DIR or data/; backbone from SAFE_BACKBONE_DIR, else the one the
        heads name (data/standin_backbone for the demo heads), else the pre-cached weights.
        Fails loudly when heads and backbone do not match."""
        settings = ServingSettings.from_env()
        heads_dir = Path(os.environ.get("SAFE_HEADS_DIR", "").strip() or self._data_dir)
        backbone = os.environ.get("SAFE_BACKBONE_DIR", "").strip() or None
        if backbone is None and not read_config(heads_dir).backbone_source:
            backbone = self._meta["weights_dir"]
        detector = load_detector(
            heads_dir, backbone, stride=settings.safe_window_stride,
            max_windows=settings.safe_max_windows, model_id=self._meta["hf_model_id"])
        config = detector.heads.config
        log.info("SAFE detector ready: backbone %s, heads trained on %s%s",
                 detector.backbone.model_id, config.backbone_model_id,
                 " (DEMO: stand-in backbone + synthetic edits, not a competitive detector)"
                 if config.trained_on_standin else "")
        runner = DetectionRunner(detector, settings, settings.max_batch_size)
        self._pipeline = ServingPipeline("safe", SafeApi(), runner, settings)
        self._pipeline.record_golden()

    async def predict(self, request: Request) -> Response:
        return await self._pipeline.handle(request)  # type: ignore[union-attr]

    def is_healthy(self) -> bool:
        return self._pipeline is not None and self._pipeline.healthy()
