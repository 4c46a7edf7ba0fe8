"""Training pipeline on synthetic manipulations, evaluated on photos of held-out SOURCES.

Train: scikit-image photos and the sample photos of the opencv-python and Pillow sdists
(tools/photo_archives.py fetches those archives from PyPI once); validation (calibration + the
figures checked here): the photos of mahotas and glymur. With the random-weight stand-in
backbone the residual statistics and the forensic maps must carry the detector. Fixed seeds: the
run is deterministic on one machine, and it reproduces the demo heads shipped in
safe_detector/data (their weights to float noise across machines: WEIGHT_ATOL).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.safe.synth import make_dataset
from tools.safe.train import TrainOptions, read_dataset, train

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "safe_detector" / "data"
# Floors under the shipped heads' validation figures (safe_detector/README.md has them and the
# issue's bars, most of which they miss): they catch regressions, they are not the bars.
PATCH_AUC_FLOOR = 0.75
EDITED_BA_FLOOR = 0.5
# The shipped weights against a clean run's: float noise across machines is up to 3.9e-5 (the
# file was made on an earlier machine, the run on an Intel Xeon); the training seed alone
# (--seed 1) moves every tensor by 2e-3 to 0.19, and every tensor then fails this check.
WEIGHT_ATOL = 2e-4


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("safe-train")
    make_dataset(work / "synth", seed=0)
    metrics = train(work / "synth", str(SHIPPED / "standin_backbone"), work / "heads",
                    cache=work / "cache", options=TrainOptions(),
                    record_source=str(SHIPPED / "standin_backbone"),
                    report=work / "report.json", predictions=work / "predictions.npz")
    return work, metrics


def auc_by_counting(scores: np.ndarray, labels: np.ndarray) -> float:
    """AUC = P(score_pos > score_neg) + P(tie) / 2, by sorting negatives (independent of the
    rank formula used in tools.safe.train)."""
    neg = np.sort(scores[~labels])
    pos = scores[labels]
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + ties / 2).sum() / (len(pos) * len(neg)))


def test_bars_on_held_out_sources(trained):
    _, metrics = trained
    held = metrics[metrics["held_out_split"]]
    assert metrics["held_out_split"] == "val"
    assert set(metrics["held_out_sources"]) == {"luispedro", "nuclear", "nemo", "goodstuff"}
    assert held["patch_auc"] >= PATCH_AUC_FLOOR
    assert held["mean_iou"] >= 1.8 * held["all_ones_mean_iou"]
    assert held["natural_fp_pixel_rate"] <= 0.05
    assert held["natural_vs_edited_balanced_accuracy"] >= EDITED_BA_FLOOR


def test_metrics_recomputed_from_saved_predictions(trained):
    work, metrics = trained
    held = metrics[metrics["held_out_split"]]
    saved = np.load(work / "predictions.npz")
    labels = saved["patch_labels"].astype(bool)
    assert 0 < labels.sum() < len(labels)
    assert auc_by_counting(saved["patch_scores"], labels) == pytest.approx(held["patch_auc"],
                                                                           abs=1e-9)
    logprobs, truth = saved["image_logprobs"], saved["image_labels"]
    np.testing.assert_allclose(np.log(np.exp(logprobs).sum(1)), 0, atol=1e-9)
    pred = logprobs.argmax(1)
    recalls = [np.mean(pred[truth == c] == c) for c in range(4)]
    assert np.mean(recalls) == pytest.approx(held["balanced_accuracy"])
    assert np.mean(saved["ious"]) == pytest.approx(held["mean_iou"])
    report = json.loads((work / "report.json").read_text())
    assert report[metrics["held_out_split"]]["patch_auc"] == held["patch_auc"]


def test_split_is_by_source_photo(trained):
    work, metrics = trained
    samples = read_dataset(work / "synth", TrainOptions())
    split_of = {}
    for s in samples:
        assert split_of.setdefault(s.source, s.split) == s.split
    donors = [json.loads(line) for line in (work / "synth" / "manifest.jsonl").read_text()
              .splitlines()]
    for row in donors:  # splice donors never cross splits either
        if row["donor"]:
            assert split_of[row["donor"]] == row["split"]
    held_out = {s.source for s in samples if s.split == metrics["held_out_split"]}
    assert held_out == set(metrics["held_out_sources"])
    assert not held_out & {s.source for s in samples if s.split == "train"}


def test_heads_file_records_backbone_and_demo_provenance(trained):
    work, _ = trained
    config = json.loads((work / "heads" / "heads.json").read_text())
    assert config["trained_on_standin"] is True
    assert "STAND-IN" in config["backbone_model_id"]
    assert config["backbone_hidden_size"] == 32 and config["backbone_patch_size"] == 14
    assert len(config["backbone_fingerprint"]) == 16


def test_shipped_demo_heads_are_reproduced_by_the_training_command(trained):
    work, metrics = trained
    shipped = json.loads((SHIPPED / "heads.json").read_text())
    assert shipped["trained_on_standin"] is True and "DEMO" in shipped["provenance"]
    assert shipped["mask_threshold"] == pytest.approx(metrics["mask_threshold"])
    assert shipped["mask_region_fraction"] == metrics["options"]["mask_region_fraction"] == 1.0
    assert shipped["temperature"] == pytest.approx(metrics["temperature"])
    assert shipped["edit_temperature"] == pytest.approx(metrics["edit_temperature"])
    held_out = metrics["held_out_split"]
    assert shipped["metrics"][held_out]["patch_auc"] == pytest.approx(
        metrics[held_out]["patch_auc"])
    assert shipped["logit_bias"] == pytest.approx(metrics["logit_bias"])
    from safetensors.torch import load_file

    ours, theirs = load_file(str(work / "heads" / "heads.safetensors")), \
        load_file(str(SHIPPED / "heads.safetensors"))
    assert ours.keys() == theirs.keys()
    # Float noise across machines, not a loose check: the shipped file was made on an earlier
    # machine; a clean run of the same commit on an Intel Xeon gave weights up to 3.9e-5 away
    # (every decision and metric above equal), while two runs on one machine agree to 1e-10.
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-3, atol=WEIGHT_ATOL)


def test_heads_refuse_a_different_backbone(trained, tmp_path):
    from tools.standins.safe_detector import make_backbone
    from vfm_serving.detection.detector import load_detector
    from vfm_serving.detection.heads import HeadsMismatchError, load_heads

    work, _ = trained
    with pytest.raises(HeadsMismatchError, match="hidden size"):
        load_heads(work / "heads", hidden_size=64, patch_size=14)
    other = make_backbone(tmp_path / "seed1", seed=1)  # same shape, different weights
    with pytest.raises(HeadsMismatchError, match="trained on backbone weights"):
        load_detector(work / "heads", str(other), stride=168, max_windows=4)
    detector = load_detector(work / "heads", None, stride=168, max_windows=4)
    assert detector.backbone.is_standin
