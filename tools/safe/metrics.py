"""SAFE metrics on what a client gets back (log-probabilities + the served mask), shared by the
training report (tools.safe.train) and the evaluation through a server (tools.safe.evaluate).

Per image a `Served` record; `served_metrics` reports overall, per edit method and per source
package: mean IoU of the served mask on locally edited images (and the all-ones baseline),
natural false-positive pixel rate, natural-vs-edited balanced accuracy (edited = any label other
than Natural), 4-way balanced accuracy, image AUC, NLL.
"""

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from vfm_serving.detection import LABELS, LOCAL_LABELS, NATURAL


@dataclasses.dataclass
class Served:
    """One image: its truth and what the detector returned."""

    label: int
    truth: Optional[np.ndarray]    # bool [H, W] (None: local image without a mask)
    logprobs: np.ndarray           # float64 [4]
    mask: np.ndarray               # {0, 1} [H, W]
    method: str = ""
    package: str = ""


def rank_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC via the Mann-Whitney rank formula (ties get average ranks); nan if one class."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def iou_f1(pred: np.ndarray, truth: np.ndarray) -> Tuple[float, float]:
    """(IoU, F1) of two binary masks; both 1.0 when both are empty."""
    inter = float(np.logical_and(pred, truth).sum())
    union = float(np.logical_or(pred, truth).sum())
    total = float(pred.sum() + truth.sum())
    return (inter / union if union else 1.0), (2 * inter / total if total else 1.0)


def balanced_accuracy(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean per-class recall over the classes present in `truth`."""
    recalls = [float((pred[truth == c] == c).mean()) for c in np.unique(truth)]
    return float(np.mean(recalls))


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def _group(records: Sequence[Served]) -> Dict[str, Any]:
    """Metrics of one group of records (see module docstring)."""
    ious, f1s, ones, fps = [], [], [], []
    for r in records:
        if r.label in LOCAL_LABELS and r.truth is not None:
            iou, f1 = iou_f1(r.mask > 0, r.truth)
            ious.append(iou)
            f1s.append(f1)
            ones.append(float(r.truth.mean()))
        elif r.label == NATURAL:
            fps.append(float((r.mask > 0).mean()))
    labels = np.array([r.label for r in records])
    logprobs = np.stack([r.logprobs for r in records])
    pred = logprobs.argmax(1)
    edited_truth, edited_pred = labels != NATURAL, pred != NATURAL
    return {
        "images": len(records),
        "mean_iou": _mean(ious),
        "mean_pixel_f1": _mean(f1s),
        "all_ones_mean_iou": _mean(ones),
        "natural_fp_pixel_rate": _mean(fps),
        "detected_as_edited": float(edited_pred.mean()),
        "natural_vs_edited_balanced_accuracy": balanced_accuracy(edited_pred.astype(int),
                                                                 edited_truth.astype(int)),
        "balanced_accuracy": balanced_accuracy(pred, labels),
        "image_auc_manipulated": rank_auc(1 - np.exp(logprobs[:, NATURAL]), edited_truth),
        "nll": float(-logprobs[np.arange(len(labels)), labels].mean()),
    }


def served_metrics(records: Sequence[Served]) -> Dict[str, Any]:
    """Overall metrics + `by_method` + `by_package` (+ confusion [truth][pred])."""
    out = _group(records)
    confusion = np.zeros((len(LABELS), len(LABELS)), int)
    for r in records:
        confusion[r.label, int(np.argmax(r.logprobs))] += 1
    out["confusion"] = confusion.tolist()
    for key in ("method", "package"):
        groups: Dict[str, List[Served]] = {}
        for r in records:
            value = getattr(r, key)
            if value:
                groups.setdefault(value, []).append(r)
        out[f"by_{key}"] = {name: _group(rs) for name, rs in sorted(groups.items())}
    return out
