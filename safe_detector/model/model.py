"""SAFE edit detector Truss: parse the request, call vfm_serving.detection, shape the response.

preprocess (no concurrency limit): validate + base64 + decode -> RGB image | 400 JSONResponse
predict (predict_concurrency):     windows -> features -> heads -> {"logprobs", "localizationMask"}
"""

import logging
import os
from pathlib import Path
from typing import Any, Dict, Optional

from fastapi.responses import JSONResponse

from vfm_serving.apis import safe as api
from vfm_serving.detection.detector import Detector, load_detector
from vfm_serving.detection.heads import read_config
from vfm_serving.errors import ServingError
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)


def error_response(err: ServingError) -> JSONResponse:
    """Map a typed error to HTTP: client mistakes -> 400, the rest -> 500; body carries the code."""
    return JSONResponse(status_code=400 if err.client_error else 500,
                        content={"error": err.to_dict()})


class Model:
    def __init__(self, config: Dict[str, Any], data_dir: Path, **kwargs: Any) -> None:
        self._meta = config["model_metadata"]
        self._data_dir = Path(data_dir)
        self._settings = ServingSettings.from_env()
        self._detector: Optional[Detector] = None

    def load(self) -> None:
        """Heads from SAFE_HEADS_DIR or data/; backbone from SAFE_BACKBONE_DIR, else the one the
        heads name (data/standin_backbone for the demo heads), else the pre-cached weights.
        Fails loudly when heads and backbone do not match."""
        heads_dir = Path(os.environ.get("SAFE_HEADS_DIR", "").strip() or self._data_dir)
        backbone = os.environ.get("SAFE_BACKBONE_DIR", "").strip() or None
        if backbone is None and not read_config(heads_dir).backbone_source:
            backbone = self._meta["weights_dir"]
        self._detector = load_detector(
            heads_dir, backbone, stride=self._settings.safe_window_stride,
            max_windows=self._settings.safe_max_windows, model_id=self._meta["hf_model_id"])
        config = self._detector.heads.config
        log.info("SAFE detector ready: backbone %s, heads trained on %s%s",
                 self._detector.backbone.model_id, config.backbone_model_id,
                 " (DEMO: stand-in backbone + synthetic edits, not a competitive detector)"
                 if config.trained_on_standin else "")

    def preprocess(self, body: Any) -> Any:
        """Validate and decode the image; a client mistake becomes a 400 response for predict."""
        try:
            request = api.parse_request(body, self._settings)
            return api.decode_image(request, self._settings)
        except ServingError as err:
            log.info("rejected request: %s", err.code)
            return error_response(err)

    def predict(self, prepared: Any) -> Any:
        """Detect and localize on one decoded image; return the SAFE response body."""
        if isinstance(prepared, JSONResponse):
            return prepared
        detection = self._detector.detect(prepared)
        return api.build_response(detection.logprobs, detection.mask)
