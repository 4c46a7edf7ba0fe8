"""Training and serving score an image the same way: the numbers tools.safe.train reports for an
image (its evaluation code path) are the numbers the real Truss server returns for it.

Shipped demo heads + stand-in backbone; a few synthetic edits and natural photos as PNG files.
"""

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.safe.synth import make_dataset
from tools.safe.train import TrainOptions, extract_all, read_dataset, score
from vfm_serving.detection.detector import IMAGENET_MEAN, IMAGENET_STD
from vfm_serving.detection.heads import load_heads
from vfm_serving.detection.residuals import FEATURE_NAMES
from vfm_serving.embeddings.dinov2 import load_backbone

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "safe_detector" / "data"


@pytest.fixture(scope="module")
def scored_by_training(tmp_path_factory):
    """Samples of a small synthetic set, scored through tools.safe.train's evaluation path."""
    work = tmp_path_factory.mktemp("safe-parity")
    make_dataset(work / "synth", photos=("astronaut", "coffee", "chelsea"), crops=1, seed=3)
    options = TrainOptions()
    samples = read_dataset(work / "synth", options)
    backbone = load_backbone(str(SHIPPED / "standin_backbone"), input_size=224,
                             mean=IMAGENET_MEAN, std=IMAGENET_STD, model_id="standin", device="cpu")
    extract_all(samples, backbone, work / "cache", options)
    heads = load_heads(SHIPPED, hidden_size=backbone.layout.hidden_size,
                       patch_size=backbone.layout.patch_size, residual_features=FEATURE_NAMES)
    return score(samples, heads)


def test_training_scores_equal_the_real_servers(scored_by_training, truss_server_factory):
    server = truss_server_factory("safe_detector")
    assert len(scored_by_training) >= 12
    labels = set()
    for scored in scored_by_training:
        data = scored.sample.image.read_bytes()
        response = server.predict({"image": {"mediaType": "image/png",
                                             "data": base64.b64encode(data).decode()}})
        assert response.status_code == 200, response.text
        body = response.json()
        np.testing.assert_allclose(body["logprobs"], scored.detection.logprobs, atol=1e-5,
                                   err_msg=str(scored.sample.image))
        mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(
            body["localizationMask"]["data"]))).convert("L")) > 0
        assert mask.shape == scored.detection.mask.shape
        # identical up to pixels whose probability sits on the threshold (float32 rounding)
        assert np.mean(mask != (scored.detection.mask > 0)) <= 1e-3, scored.sample.image
        labels.add(scored.detection.label)
    assert len(labels) >= 2  # the comparison covered more than one mask rule branch
