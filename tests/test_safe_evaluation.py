"""The shipped detector on photos of sources no training saw (scikit-learn, matplotlib,
PyWavelets), through the real Truss server with its shipped defaults: tools.safe.evaluate.

A smaller set than the README's (one crop per photo instead of three), so the floors below sit
under the README's figures; they guard against regressions and are not the issue's bars (see
safe_detector/README.md for which bars are met and which are missed).
"""

import pytest

from tools.safe.evaluate import evaluate_set
from tools.safe.synth import make_evaluation_set
from tools.sample_photos import EVALUATION_ONLY_SOURCES

MEAN_IOU_FLOOR = 0.2
NATURAL_FP_CEILING = 0.1
EDITED_BA_FLOOR = 0.5


@pytest.fixture(scope="module")
def metrics(tmp_path_factory, truss_server_factory):
    data = tmp_path_factory.mktemp("safe-eval")
    rows = make_evaluation_set(data, crops=1)
    assert {row["package"] for row in rows} == set(EVALUATION_ONLY_SOURCES)
    assert {row["split"] for row in rows} == {"test"}
    server = truss_server_factory("safe_detector")
    return evaluate_set(server.predict_url, data)


def test_localization_beats_the_all_ones_baseline(metrics):
    assert metrics["images"] == 36
    assert metrics["mean_iou"] >= 2 * metrics["all_ones_mean_iou"]
    assert metrics["mean_iou"] >= MEAN_IOU_FLOOR


def test_natural_photos_stay_clean(metrics):
    assert metrics["natural_fp_pixel_rate"] <= NATURAL_FP_CEILING


def test_natural_vs_edited(metrics):
    assert metrics["natural_vs_edited_balanced_accuracy"] >= EDITED_BA_FLOOR
    assert metrics["by_method"]["full"]["detected_as_edited"] >= 0.5

