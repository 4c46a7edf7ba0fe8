"""SAFE inference: image -> windows -> features -> patch probabilities -> mask + logprobs.

Features per patch: the frozen backbone's patch token [D] ; the robust z-score of the residual
statistics against the image's own median/spread [R] ; the 3x3-neighbourhood mean of that
z-score [R] and its absolute value [R]. (Absolute residual levels enter only the global head.)
Global features per image: mean CLS [D] ; mean patch token [D] ; pooled patch probabilities
(mean, max, top-5% mean, fraction above the pooling threshold) [4] ; image median of the residual
statistics [R] ; probability-weighted residual statistics and z-scores [2R].

Mask rule (label and mask always agree):
- argmax Natural -> all zeros;
- argmax FullySynthesized -> all ones (every pixel is synthesized);
- argmax LocallyEdited / LocallySynthesized -> probability map >= threshold; if that is empty,
  the top-scoring region (pixels within 10% of the map's maximum) so the mask is never empty.
"""

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vfm_serving.batching import micro_batches
from vfm_serving.detection import FULLY_SYNTHESIZED, LABELS, NATURAL
from vfm_serving.detection.heads import Heads, load_heads
from vfm_serving.detection.residuals import FEATURE_NAMES, image_deviation, patch_statistics
from vfm_serving.detection.windows import Tiling, cut_windows, plan_tiling, stitch
from vfm_serving.embeddings.dinov2 import Backbone, forward_tokens, load_backbone
from vfm_serving.embeddings.preprocess import normalize_arrays

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOPK_FRACTION = 0.05
CONTEXT = 3


@dataclasses.dataclass
class ImageFeatures:
    """Frozen features of one image. N windows, P = grid*grid patches, D hidden, R statistics."""

    tiling: Tiling
    patch_tokens: torch.Tensor  # [N, P, D]
    cls: torch.Tensor           # [N, D]
    stats: torch.Tensor         # [N, P, R]
    deviation: torch.Tensor     # [N, P, R]
    median: torch.Tensor        # [R]
    grid: int                   # patches per window side, from the backbone's TokenLayout


@dataclasses.dataclass
class Detection:
    """Result for one image: calibrated log-probabilities [4], label, probability map and mask."""

    logprobs: np.ndarray      # float64 [4], logsumexp == 0
    label: int
    prob_map: torch.Tensor    # float32 [H, W] in [0, 1]
    mask: np.ndarray          # uint8 [H, W] in {0, 1}


def backbone_fingerprint(backbone: Backbone) -> str:
    """Short sha256 of the first 4-D weight (the patch embedding): identifies the exact weights."""
    for _, param in backbone.model.named_parameters():
        if param.ndim == 4:
            return hashlib.sha256(param.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
    raise ValueError("backbone has no 4-D (patch embedding) weight")


def extract_features(backbone: Backbone, image: Image.Image, *, stride: int, max_windows: int,
                     batch_size: int = 16) -> ImageFeatures:
    """RGB PIL image -> frozen per-window tokens and residual statistics (see ImageFeatures)."""
    layout = backbone.layout
    tiling = plan_tiling(image.width, image.height, layout.input_size, stride, max_windows)
    windows = cut_windows(image, tiling)
    tokens = []
    for chunk in micro_batches(windows, batch_size):
        pixels = normalize_arrays(chunk, backbone.mean, backbone.std)
        tokens.append(forward_tokens(backbone, pixels))
    tokens_t = torch.cat(tokens)
    stats = patch_statistics(windows, layout.patch_size, tiling.boxes)
    deviation, median = image_deviation(stats)
    return ImageFeatures(tiling=tiling, patch_tokens=tokens_t[:, layout.num_prefix_tokens:],
                         cls=tokens_t[:, 0], stats=stats, deviation=deviation, median=median,
                         grid=layout.grid)


def neighbourhood(values: torch.Tensor, grid: int, size: int = CONTEXT) -> torch.Tensor:
    """Mean over the size x size patch neighbourhood inside each window: [N, P, R] -> [N, P, R].

    Edited regions span several patches: the neighbourhood mean is a less noisy estimate of the
    local statistics than one 14x14 patch."""
    n, p, r = values.shape
    grid_values = values.permute(0, 2, 1).reshape(n, r, grid, grid)
    pooled = F.avg_pool2d(grid_values, size, stride=1, padding=size // 2, count_include_pad=False)
    return pooled.reshape(n, r, p).permute(0, 2, 1)


def patch_matrix(features: ImageFeatures) -> torch.Tensor:
    """[N*P, D + 3R]: patch token ; robust z-score of the residual statistics against the image ;
    neighbourhood mean of that z-score ; its absolute value (noise raises residuals, blur and
    resampling lower them: |z| lets even a linear head flag both). Absolute residual levels are
    left to the global head: on unfamiliar content (e.g. a night sky) they would flag the whole
    image."""
    context = neighbourhood(features.deviation, features.grid)
    x = torch.cat([features.patch_tokens, features.deviation, context, context.abs()], dim=-1)
    return x.reshape(-1, x.shape[-1])


def patch_dim(hidden_size: int) -> int:
    """Width of `patch_matrix` rows for a backbone of `hidden_size`."""
    return hidden_size + 3 * len(FEATURE_NAMES)


def global_dim(hidden_size: int) -> int:
    """Width of `global_vector` for a backbone of `hidden_size`."""
    return 2 * hidden_size + 4 + 3 * len(FEATURE_NAMES)


def global_vector(features: ImageFeatures, patch_probs: torch.Tensor,
                  threshold: float) -> torch.Tensor:
    """Image features [global_dim(D)] from frozen features and patch probabilities [N, P]."""
    probs = patch_probs.reshape(-1)
    k = max(1, int(round(TOPK_FRACTION * probs.numel())))
    pooled = torch.stack([probs.mean(), probs.max(), probs.topk(k).values.mean(),
                          (probs >= threshold).float().mean()])
    weights = (probs / probs.sum().clamp_min(1e-6))[:, None]
    stats = features.stats.reshape(-1, features.stats.shape[-1])
    dev = features.deviation.reshape(-1, features.deviation.shape[-1])
    return torch.cat([features.cls.mean(0), features.patch_tokens.mean((0, 1)), pooled,
                      features.median, (weights * stats).sum(0), (weights * dev).sum(0)])


@torch.no_grad()
def patch_probabilities(heads: Heads, features: ImageFeatures) -> torch.Tensor:
    """Manipulation probability of every patch: [N, P]."""
    logits = heads.patch(patch_matrix(features))
    return torch.sigmoid(logits).reshape(features.patch_tokens.shape[:2])


@torch.no_grad()
def calibrated_logprobs(heads: Heads, vector: torch.Tensor) -> np.ndarray:
    """Global vector [G] -> float64 log-probabilities [4] with logsumexp exactly ~0."""
    logits = heads.global_(vector[None].float())[0].double() / heads.config.temperature
    return torch.log_softmax(logits, dim=0).numpy()


def decide_mask(label: int, prob_map: torch.Tensor, threshold: float) -> np.ndarray:
    """Apply the mask rule (module docstring) -> uint8 [H, W] in {0, 1}."""
    if label == NATURAL:
        return np.zeros(prob_map.shape, dtype=np.uint8)
    if label == FULLY_SYNTHESIZED:
        return np.ones(prob_map.shape, dtype=np.uint8)
    mask = prob_map >= threshold
    if not bool(mask.any()):
        mask = prob_map >= 0.9 * prob_map.max()
    return mask.numpy().astype(np.uint8)


class Detector:
    """A backbone + heads pair with its window settings; `detect` runs one image."""

    def __init__(self, backbone: Backbone, heads: Heads, *, stride: int, max_windows: int) -> None:
        self.backbone = backbone
        self.heads = heads
        self.stride = stride
        self.max_windows = max_windows

    def detect(self, image: Image.Image) -> Detection:
        """RGB PIL image (W x H) -> Detection with mask and prob_map of shape [H, W]."""
        started = time.perf_counter()
        features = extract_features(self.backbone, image, stride=self.stride,
                                    max_windows=self.max_windows)
        probs = patch_probabilities(self.heads, features)
        threshold = self.heads.config.mask_threshold
        vector = global_vector(features, probs, self.heads.config.pooling_threshold)
        logprobs = calibrated_logprobs(self.heads, vector)
        label = int(np.argmax(logprobs))
        prob_map = stitch(probs.reshape(-1, features.grid, features.grid), features.tiling)
        mask = decide_mask(label, prob_map, threshold)
        log.info("detected %s on %dx%d image (%d windows) in %.3fs", LABELS[label], image.width,
                 image.height, features.tiling.num_windows, time.perf_counter() - started)
        return Detection(logprobs=logprobs, label=label, prob_map=prob_map, mask=mask)


def load_detector(heads_dir: Path, backbone_source: Optional[str], *, stride: int,
                  max_windows: int, model_id: str = "unknown", device: Optional[str] = None,
                  mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD) -> Detector:
    """Load the heads, then the backbone they name (or `backbone_source` when given), and check
    that they fit.

    Raises:
        HeadsMismatchError: heads trained with different backbone weights / hidden / patch size.
        OSError / ValueError: backbone checkpoint missing or invalid.
    """
    from vfm_serving.detection.heads import HeadsMismatchError, read_config

    config = read_config(heads_dir)
    source = backbone_source or config.backbone_source
    if not source:
        raise HeadsMismatchError("no backbone source: set one or record it in heads.json")
    if not Path(source).is_absolute() and (heads_dir / source).exists():
        source = str(heads_dir / source)
    backbone = load_backbone(source, input_size=config.input_size, mean=mean, std=std,
                             model_id=model_id, device=device)
    heads = load_heads(heads_dir, hidden_size=backbone.layout.hidden_size,
                       patch_size=backbone.layout.patch_size, residual_features=FEATURE_NAMES)
    fingerprint = backbone_fingerprint(backbone)
    expected = config.backbone_fingerprint
    if expected and expected != fingerprint:
        raise HeadsMismatchError(f"heads were trained on backbone weights {expected}, the loaded "
                                 f"backbone {backbone.model_id!r} is {fingerprint}")
    return Detector(backbone, heads, stride=stride, max_windows=max_windows)
