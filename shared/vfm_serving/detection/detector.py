"""SAFE inference: image -> windows -> features -> patch probabilities -> mask + logprobs.

Features per patch: the frozen backbone's patch token [D] (left out when the heads say
`patch_token_features: false`) ; the robust z-score of the residual
statistics against the image's own median/spread [R] ; the 3x3-neighbourhood mean of that
z-score [R] and its absolute value [R] ; the forensic maps (forensics.py) read at the patch
centre [M = 2 copy-move maps as they are + K relative maps as robust z-scores] ; their
neighbourhood mean [M] and the absolute neighbourhood z of the relative maps [K] ; the
neighbourhood mean of the TEXTURE-CONDITIONED z-score of the residual statistics (against what
the image's own texture-vs-statistics relation predicts: `texture_conditioned_deviation`) [R]
and its absolute value [R] ; the neighbourhood mean of the texture-conditioned z-score of the
relative forensic maps [K] and its absolute value [K] (bokeh, sky and other smooth content have
their own resampling correlation and JPEG blockiness; against the image's own texture relation
they are ordinary, an edit is not).
(Absolute residual levels enter only the global head.)
Global features per image: mean CLS [D] ; mean patch token [D] (both left out when the heads
say `global_token_features: false`) ; pooled patch probabilities (mean, top-1% mean, top-5%
mean, fraction above the pooling threshold) [4] ; image median of the residual statistics [R] ;
probability-weighted residual statistics and z-scores [2R] ; per forensic feature the mean,
top-1% and top-5% mean over patches and the probability-weighted mean [4M] ; image median of
the relative forensic maps [K].
Edit gate per image: the pooled patch probabilities [4] alone (natural vs locally edited: whether
the image holds a region unlike the rest of it, the evidence that transfers best to photos of
unseen cameras).
Log-probabilities: FullySynthesized from the global head; the rest split between Natural and the
local labels by the edit gate, and between the two local labels by the global head
(`calibrated_logprobs`).

Mask rule (label = argmax of the returned logprobs; label and mask always agree):
- Natural -> all zeros;
- FullySynthesized -> all ones (every pixel is synthesized);
- LocallyEdited / LocallySynthesized -> probability map >= threshold; if that is empty,
  the top-scoring region (pixels within 10% of the map's maximum) so the mask is never empty.
  Of its connected regions (8-connected), those whose probability mass (sum of the map over the
  region) is below `mask_region_fraction` x the strongest region's are dropped (heads config;
  1.0 keeps the strongest region only, 0.0 keeps every region). One edit is one region; the
  weaker blobs a threshold leaves elsewhere cost IoU and natural false positives, and a
  copy-move's source (matched as strongly as its pasted target, but not edited) is often one of
  them.
"""

import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image
from torch.nn import functional

from vfm_serving.detection import FULLY_SYNTHESIZED, LABELS, LOCAL_LABELS, NATURAL
from vfm_serving.detection.forensics import (
    CM_NAMES,
    FORENSIC_NAMES,
    NUM_FORENSIC,
    RELATIVE_NAMES,
    forensic_maps,
    sample_at,
)
from vfm_serving.detection.heads import GlobalHead, Heads, PatchHead, load_heads
from vfm_serving.detection.residuals import (
    FEATURE_NAMES,
    image_deviation,
    patch_statistics,
    texture_conditioned_deviation,
)
from vfm_serving.detection.windows import Tiling, cut_windows, plan_tiling, stitch
from vfm_serving.embeddings.dinov2 import Backbone, forward_tokens, load_backbone
from vfm_serving.embeddings.geometry import TokenLayout
from vfm_serving.embeddings.preprocess import normalize_arrays

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOPK_FRACTION = 0.05
TOP1_FRACTION = 0.01  # pooled "maxima" are top-1% means (a max grows with the patch count)
CONTEXT = 3
POOLED_DIM = 4  # pooled patch probabilities: mean, top-1% mean, top-5% mean, fraction >= threshold


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
    forensic: torch.Tensor      # [N, P, M]: copy-move maps ; z-scores of the relative maps
    forensic_median: torch.Tensor  # [K] image median of the relative maps


@dataclasses.dataclass
class Detection:
    """Result for one image: calibrated log-probabilities [4], label, probability map and mask."""

    logprobs: np.ndarray      # float64 [4], logsumexp == 0
    logits: torch.Tensor      # float64 [4], the global head's, before calibration
    edit_logits: torch.Tensor  # float64 [2] (Natural, edited), the edit gate's, before calibration
    label: int
    prob_map: torch.Tensor    # float32 [H, W] in [0, 1]
    mask: np.ndarray          # uint8 [H, W] in {0, 1}
    patch_probs: torch.Tensor  # float32 [N, P], per window and patch


def backbone_fingerprint(backbone: Backbone) -> str:
    """Short sha256 of the first 4-D weight (the patch embedding): identifies the exact weights."""
    for _, param in backbone.model.named_parameters():
        if param.ndim == 4:
            return hashlib.sha256(param.detach().float().cpu().numpy().tobytes()).hexdigest()[:16]
    raise ValueError("backbone has no 4-D (patch embedding) weight")


@dataclasses.dataclass
class PreparedImage:
    """CPU-side, per-image input of `Detector.detect_batch` (made by `Detector.prepare`).

    N windows of S x S pixels, P = grid*grid patches, R residual statistics."""

    tiling: Tiling
    pixels: torch.Tensor        # float32 [N, 3, S, S], normalized for the backbone
    stats: torch.Tensor         # [N, P, R]
    deviation: torch.Tensor     # [N, P, R]
    median: torch.Tensor        # [R]
    forensic: torch.Tensor      # [N, P, M]
    forensic_median: torch.Tensor  # [K]

    @property
    def num_windows(self) -> int:
        return self.tiling.num_windows


def prepare_image(image: Image.Image, layout: TokenLayout, mean: Sequence[float],
                  std: Sequence[float], *, stride: int, max_windows: int) -> PreparedImage:
    """RGB PIL image -> windows normalized for the backbone + residual statistics (CPU only, no
    backbone call, thread-safe).

    Raises:
        ValueError: stride / max_windows out of range (see `plan_tiling`).
    """
    tiling = plan_tiling(image.width, image.height, layout.input_size, stride, max_windows)
    windows = cut_windows(image, tiling)
    pixels = normalize_arrays(list(windows), mean, std)
    stats = patch_statistics(windows, layout.patch_size, tiling.boxes)
    deviation, median = image_deviation(stats)
    forensic, forensic_median = patch_forensics(image, tiling, layout.patch_size)
    return PreparedImage(tiling=tiling, pixels=pixels, stats=stats, deviation=deviation,
                         median=median, forensic=forensic, forensic_median=forensic_median)


def patch_forensics(image: Image.Image, tiling: Tiling,
                    patch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Forensic maps of the ORIGINAL pixels read at every patch centre of every window:
    ([N, P, M] = copy-move maps ; robust z of the relative maps, [K] image median of the
    relative maps)."""
    maps = forensic_maps(np.asarray(image, dtype=np.uint8))
    grid = tiling.window // patch
    centres = (np.arange(grid) * patch + patch / 2.0 - 0.5)
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    w, h = tiling.size
    ow, oh = tiling.original_size
    ys = np.concatenate([(top + cy.ravel() + 0.5) * (oh / h) - 0.5 for top, _ in tiling.boxes])
    xs = np.concatenate([(left + cx.ravel() + 0.5) * (ow / w) - 0.5 for _, left in tiling.boxes])
    values = torch.from_numpy(sample_at(maps, ys, xs, tiling.original_size))
    values = values.reshape(tiling.num_windows, grid * grid, NUM_FORENSIC)
    n_cm = len(CM_NAMES)
    z, relative_median = image_deviation(values[..., n_cm:])
    return torch.cat([values[..., :n_cm], z], dim=-1), relative_median


@torch.no_grad()
def backbone_features(backbone: Backbone, items: Sequence[PreparedImage], *,
                      max_windows_per_forward: int) -> List[ImageFeatures]:
    """ONE backbone pass over the concatenated windows of all items, in micro-batches of at most
    `max_windows_per_forward` windows; returns each item's ImageFeatures, in input order.

    Raises:
        ValueError: max_windows_per_forward < 1.
        RuntimeError: the backbone returned an unexpected number of tokens.
    """
    if not items:
        return []
    layout = backbone.layout
    pixels = torch.cat([item.pixels for item in items])
    tokens = torch.cat([forward_tokens(backbone, chunk)
                        for chunk in _chunks(pixels, max_windows_per_forward)])
    out, start = [], 0
    for item in items:
        mine = tokens[start:start + item.num_windows]
        start += item.num_windows
        out.append(ImageFeatures(tiling=item.tiling,
                                 patch_tokens=mine[:, layout.num_prefix_tokens:], cls=mine[:, 0],
                                 stats=item.stats, deviation=item.deviation, median=item.median,
                                 grid=layout.grid, forensic=item.forensic,
                                 forensic_median=item.forensic_median))
    return out


def _chunks(batch: torch.Tensor, size: int) -> List[torch.Tensor]:
    """Split [B, ...] along dim 0 into consecutive chunks of at most `size` rows."""
    if size < 1:
        raise ValueError("max_windows_per_forward must be >= 1")
    return list(torch.split(batch, size))


def extract_features(backbone: Backbone, image: Image.Image, *, stride: int, max_windows: int,
                     batch_size: int = 16) -> ImageFeatures:
    """RGB PIL image -> frozen per-window tokens and residual statistics (see ImageFeatures)."""
    prepared = prepare_image(image, backbone.layout, backbone.mean, backbone.std, stride=stride,
                             max_windows=max_windows)
    return backbone_features(backbone, [prepared], max_windows_per_forward=batch_size)[0]


def neighbourhood(values: torch.Tensor, grid: int, size: int = CONTEXT) -> torch.Tensor:
    """Mean over the size x size patch neighbourhood inside each window: [N, P, R] -> [N, P, R].

    Edited regions span several patches: the neighbourhood mean is a less noisy estimate of the
    local statistics than one 14x14 patch."""
    n, p, r = values.shape
    grid_values = values.permute(0, 2, 1).reshape(n, r, grid, grid)
    pooled = functional.avg_pool2d(grid_values, size, stride=1, padding=size // 2,
                                   count_include_pad=False)
    return pooled.reshape(n, r, p).permute(0, 2, 1)


def patch_matrix(features: ImageFeatures, token_features: bool = True) -> torch.Tensor:
    """[N*P, patch_dim(D, token_features)]: patch token (unless not `token_features`: heads
    trained on a random-weight stand-in leave its tokens out) ; robust z-score of the residual
    statistics against the image ; neighbourhood mean of that z-score ; its absolute value (noise
    raises residuals, blur and resampling lower them: |z| lets even a linear head flag both) ;
    forensic features ; their neighbourhood mean ; |neighbourhood z| of the relative forensic
    maps ; the neighbourhood mean of the texture-conditioned z-score and its absolute value (a
    smooth face against a sharp background is not an anomaly there), of the residual
    statistics, then of the relative forensic maps. Absolute residual levels
    are left to the global head: on unfamiliar content (e.g. a night sky) they would flag the
    whole image."""
    context = neighbourhood(features.deviation, features.grid)
    forensic_context = neighbourhood(features.forensic, features.grid)
    conditioned = texture_conditioned_deviation(features.stats)
    conditioned_context = neighbourhood(conditioned, features.grid)
    forensic_conditioned = texture_conditioned_deviation(
        features.stats, features.forensic[..., len(CM_NAMES):])
    forensic_conditioned_context = neighbourhood(forensic_conditioned, features.grid)
    tokens = [features.patch_tokens] if token_features else []
    x = torch.cat([*tokens, features.deviation, context, context.abs(),
                   features.forensic, forensic_context,
                   forensic_context[..., len(CM_NAMES):].abs(),
                   conditioned_context, conditioned_context.abs(),
                   forensic_conditioned_context, forensic_conditioned_context.abs()], dim=-1)
    return x.reshape(-1, x.shape[-1])


def patch_dim(hidden_size: int, token_features: bool = True) -> int:
    """Width of `patch_matrix` rows for a backbone of `hidden_size` (`token_features`: whether
    the patch token is part of them)."""
    tokens = hidden_size if token_features else 0
    return tokens + 5 * len(FEATURE_NAMES) + 3 * NUM_FORENSIC - len(CM_NAMES) \
        + 2 * len(RELATIVE_NAMES)


def global_dim(hidden_size: int, token_features: bool = True) -> int:
    """Width of `global_vector` for a backbone of `hidden_size` (`token_features`: whether the
    backbone's mean CLS and mean patch token are part of it)."""
    tokens = 2 * hidden_size if token_features else 0
    return tokens + POOLED_DIM + 3 * len(FEATURE_NAMES) + 4 * NUM_FORENSIC + len(RELATIVE_NAMES)


def top_counts(n: int) -> Tuple[int, int]:
    """How many of n values the top-1% and top-5% means average: (top1, top5), each >= 1."""
    return (max(1, int(round(TOP1_FRACTION * n))), max(1, int(round(TOPK_FRACTION * n))))


def pooled_probabilities(patch_probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """Patch probabilities [N, P] -> [POOLED_DIM]: mean, top-1% mean, top-5% mean, fraction >=
    `threshold` (the edit gate's input and the start of the global vector's own features)."""
    probs = patch_probs.reshape(-1)
    top1, k = top_counts(probs.numel())
    return torch.stack([probs.mean(), probs.topk(top1).values.mean(),
                        probs.topk(k).values.mean(), (probs >= threshold).float().mean()])


def global_vector(features: ImageFeatures, patch_probs: torch.Tensor, pooled: torch.Tensor,
                  token_features: bool = True) -> torch.Tensor:
    """Image features [global_dim(D, token_features)] from frozen features, patch probabilities
    [N, P] and their `pooled_probabilities` [POOLED_DIM] (computed once by the caller: the edit
    gate reads the same values). Without `token_features` the backbone's tokens are left out
    (heads trained on a random-weight stand-in: its tokens carry no semantics, only noise to
    overfit)."""
    probs = patch_probs.reshape(-1)
    top1, k = top_counts(probs.numel())
    weights = (probs / probs.sum().clamp_min(1e-6))[:, None]
    stats = features.stats.reshape(-1, features.stats.shape[-1])
    dev = features.deviation.reshape(-1, features.deviation.shape[-1])
    forensic = features.forensic.reshape(-1, features.forensic.shape[-1])
    forensic_pooled = torch.cat([forensic.mean(0), forensic.topk(top1, dim=0).values.mean(0),
                                 forensic.topk(k, dim=0).values.mean(0),
                                 (weights * forensic).sum(0)])
    tokens = [features.cls.mean(0), features.patch_tokens.mean((0, 1))] if token_features else []
    return torch.cat([*tokens, pooled, features.median, (weights * stats).sum(0),
                      (weights * dev).sum(0), forensic_pooled, features.forensic_median])


@torch.no_grad()
def patch_probabilities(head: PatchHead, features: ImageFeatures,
                        token_features: bool = True) -> torch.Tensor:
    """Manipulation probability of every patch: [N, P] (`token_features` as in `patch_matrix`,
    from the heads' config)."""
    logits = head(patch_matrix(features, token_features))
    return torch.sigmoid(logits).reshape(features.patch_tokens.shape[:2])


@torch.no_grad()
def global_logits(head: GlobalHead, vector: torch.Tensor) -> torch.Tensor:
    """Global head on its vector [G] (or the edit gate on the pooled probabilities [4]) ->
    uncalibrated float64 logits [C]."""
    return head(vector[None].float())[0].double()


def calibrated_logprobs(logits: torch.Tensor, edit_logits: torch.Tensor, temperature: float,
                        edit_temperature: float,
                        bias: Sequence[float] = (0.0, 0.0, 0.0, 0.0)) -> np.ndarray:
    """Global head logits [..., 4] + edit gate logits [..., 2] (Natural, edited), uncalibrated ->
    float64 log-probabilities [..., 4], logsumexp == 0 up to float64 rounding:

        P(FullySynthesized) = softmax(logits / T + (0, b_full, 0, 0))[FullySynthesized]
        P(Natural)          = (1 - P(Full)) * softmax(edit_logits / T_edit + (b_nat, 0))[0]
        P(local label k)    = (1 - P(Full)) * softmax(edit_logits / T_edit + (b_nat, 0))[1]
                              * softmax(logits[local labels] / T)[k]

    `bias` = (b_nat, b_full, 0, 0): log-prior offsets fitted on validation data
    (tools.safe.train), so the argmax that the mask rule follows is the decision the heads were
    tuned for."""
    logits, edit_logits = logits.double(), edit_logits.double()
    offsets = torch.zeros(len(LABELS), dtype=torch.float64)
    offsets[FULLY_SYNTHESIZED] = float(bias[FULLY_SYNTHESIZED])
    label = torch.log_softmax(logits / temperature + offsets, dim=-1)
    not_full = torch.logsumexp(label[..., [NATURAL, *LOCAL_LABELS]], dim=-1)
    gate = torch.log_softmax(edit_logits / edit_temperature
                             + torch.tensor([float(bias[NATURAL]), 0.0], dtype=torch.float64),
                             dim=-1)
    local = torch.log_softmax(logits[..., list(LOCAL_LABELS)] / temperature, dim=-1)
    out = torch.empty_like(label)
    out[..., NATURAL] = not_full + gate[..., 0]
    out[..., FULLY_SYNTHESIZED] = label[..., FULLY_SYNTHESIZED]
    for k, index in enumerate(LOCAL_LABELS):
        out[..., index] = not_full + gate[..., 1] + local[..., k]
    return out.numpy()


def decide_mask(label: int, prob_map: torch.Tensor, threshold: float,
                region_fraction: float = 0.0) -> np.ndarray:
    """Apply the mask rule (module docstring) to a probability map float32 [H, W] -> uint8
    [H, W] in {0, 1}. `region_fraction` in [0, 1]: keep the connected regions whose probability
    mass is at least this fraction of the strongest region's."""
    if label == NATURAL:
        return np.zeros(prob_map.shape, dtype=np.uint8)
    if label == FULLY_SYNTHESIZED:
        return np.ones(prob_map.shape, dtype=np.uint8)
    mask = prob_map >= threshold
    if not bool(mask.any()):
        mask = prob_map >= 0.9 * prob_map.max()
    return strong_regions(mask.numpy(), prob_map.numpy(), region_fraction).astype(np.uint8)


def strong_regions(mask: np.ndarray, prob_map: np.ndarray, fraction: float) -> np.ndarray:
    """bool [H, W] -> bool [H, W]: the 8-connected regions of `mask` whose sum of `prob_map`
    [H, W] is at least `fraction` x the largest such sum (fraction 0: `mask` unchanged)."""
    if fraction <= 0.0:
        return mask
    # OpenCV's labelling: ~3x faster than scipy.ndimage.label, the same regions
    count, regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if count <= 2:                                    # label 0 is the background
        return mask
    mass = np.bincount(regions[mask], weights=prob_map[mask], minlength=count)
    return (mass >= fraction * mass.max())[regions] & mask


def detection_from_features(heads: Heads, features: ImageFeatures) -> Detection:
    """Heads on frozen features -> Detection (patch probabilities, calibrated log-probs, label,
    stitched probability map [H, W] at the original size, mask by the mask rule). The one
    function both the server and tools.safe.train use to score an image."""
    probs = patch_probabilities(heads.patch, features, heads.config.patch_token_features)
    config = heads.config
    pooled = pooled_probabilities(probs, config.pooling_threshold)
    logits = global_logits(heads.global_, global_vector(features, probs, pooled,
                                                        config.global_token_features))
    edit_logits = global_logits(heads.edit, pooled)
    logprobs = calibrated_logprobs(logits, edit_logits, config.temperature,
                                   config.edit_temperature, config.logit_bias)
    label = int(np.argmax(logprobs))
    prob_map = stitch(probs.reshape(-1, features.grid, features.grid), features.tiling)
    mask = decide_mask(label, prob_map, config.mask_threshold, config.mask_region_fraction)
    return Detection(logprobs=logprobs, logits=logits, edit_logits=edit_logits, label=label,
                     prob_map=prob_map, mask=mask, patch_probs=probs)


class Detector:
    """A backbone + heads pair with its window settings.

    `prepare` (CPU, per image, thread-safe) then `detect_batch` (one backbone pass over the
    windows of all prepared images, micro-batched by `max_windows_per_forward`); `detect` is
    both for one image."""

    def __init__(self, backbone: Backbone, heads: Heads, *, stride: int, max_windows: int,
                 max_windows_per_forward: int = 16) -> None:
        if max_windows_per_forward < 1:
            raise ValueError("max_windows_per_forward must be >= 1")
        self.backbone = backbone
        self.heads = heads
        self.stride = stride
        self.max_windows = max_windows
        self.max_windows_per_forward = max_windows_per_forward

    def prepare(self, image: Image.Image) -> PreparedImage:
        """RGB PIL image (W x H) -> PreparedImage (tiling, normalized windows, residual
        statistics). CPU only, no backbone call; safe to call from several threads."""
        return prepare_image(image, self.backbone.layout, self.backbone.mean, self.backbone.std,
                             stride=self.stride, max_windows=self.max_windows)

    def detect_batch(self, items: Sequence[PreparedImage]) -> List[Detection]:
        """One backbone pass over the concatenated windows of all items (micro-batches of at most
        `max_windows_per_forward` windows), then heads + mask per item; results in input order,
        each with mask and prob_map of its own image's [H, W]."""
        started = time.perf_counter()
        features = backbone_features(self.backbone, items,
                                     max_windows_per_forward=self.max_windows_per_forward)
        detections = [detection_from_features(self.heads, f) for f in features]
        for f, d in zip(features, detections, strict=True):
            width, height = f.tiling.original_size
            log.debug("detected %s on %dx%d image (%d windows)", LABELS[d.label], width, height,
                      f.tiling.num_windows)
        log.info("detected %d image(s), %d windows, in %.3fs", len(items),
                 sum(item.num_windows for item in items), time.perf_counter() - started)
        return detections

    def detect(self, image: Image.Image) -> Detection:
        """RGB PIL image (W x H) -> Detection with mask and prob_map of shape [H, W]."""
        return self.detect_batch([self.prepare(image)])[0]


def load_detector(heads_dir: Path, backbone_source: Optional[str], *, stride: int,
                  max_windows: int, model_id: str = "unknown", device: Optional[str] = None,
                  mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD,
                  max_windows_per_forward: int = 16) -> Detector:
    """Load the heads, then the backbone they name (or `backbone_source` when given), and check
    that they fit. `max_windows_per_forward` caps the windows of one backbone call in
    `Detector.detect_batch`.

    Raises:
        HeadsMismatchError: heads trained with different backbone weights / hidden / patch size,
            or for feature rows of another width.
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
                       patch_size=backbone.layout.patch_size, residual_features=FEATURE_NAMES,
                       forensic_features=FORENSIC_NAMES)
    widths = (patch_dim(backbone.layout.hidden_size, heads.config.patch_token_features),
              global_dim(backbone.layout.hidden_size, heads.config.global_token_features))
    declared = (heads.config.patch_in_dim, heads.config.global_in_dim, heads.config.edit_in_dim)
    if declared != (*widths, POOLED_DIM):
        raise HeadsMismatchError(
            f"heads take patch / global / edit rows of {declared[0]} / {declared[1]} / "
            f"{declared[2]} features, this code makes {widths[0]} / {widths[1]} / {POOLED_DIM}")
    fingerprint = backbone_fingerprint(backbone)
    expected = config.backbone_fingerprint
    if expected and expected != fingerprint:
        raise HeadsMismatchError(f"heads were trained on backbone weights {expected}, the loaded "
                                 f"backbone {backbone.model_id!r} is {fingerprint}")
    return Detector(backbone, heads, stride=stride, max_windows=max_windows,
                    max_windows_per_forward=max_windows_per_forward)
