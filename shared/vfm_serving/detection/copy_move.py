"""Copy-move detection: the image matched against itself, robust to rotated / scaled copies.

`copy_move_maps(rgb)` -> float32 [2, h, w] (`cm_match`, `cm_target`) on the analysis grid (the
grey image with its long side capped at `CopyMoveSettings.analysis_side`):

1. Keypoints: OpenCV SIFT on the grey analysis image (many features, low contrast threshold),
   descriptors as RootSIFT (L1-normalised, square-rooted: Hellinger distance), which are
   rotation and scale invariant and survive recompression and mild resampling.
2. Self-matching: each descriptor's nearest neighbours among the image's own (itself and any
   keypoint closer than `min_offset` in the image excluded); the generalised 2NN test (g2NN)
   keeps neighbours while d_i / d_(i+1) < `ratio`, so a region copied more than once still
   matches all its copies.
3. Geometric verification: a similarity transform (rotation + uniform scale + shift) fitted by
   RANSAC (`cv2.estimateAffinePartial2D`) to the matches taken in both directions; accepted when
   it has `min_inliers` matches and is not degenerate (shift below `min_offset`, scale outside
   1 / `max_scale` .. `max_scale`); its matches are removed and the search repeats, up to
   `max_transforms` transforms.
4. Dense localisation per transform T (source -> target): the image compared with its own
   warped copy, I(x) vs I(T x), over small windows (squared difference small against the local
   variance, on textured pixels only); connected agreeing regions that hold inlier sources are
   kept (holes filled): that is the source region, and T maps it onto the target region.
5. Which side is the pasted copy: the resampled side of a rotated / scaled copy has lost its
   finest detail relative to its mid-frequency content (`smooth_margin`); failing that (an
   integer shift resamples nothing), the copy's boundary cuts through content. Two measures
   vote: the gradient on the 2-px rim of each region, and the gradient on a +-6 px band around
   the boundary relative to the content a little farther in and out (`_seam`); each votes for
   the side with more when the difference passes `seam_margin`; a tie (a conflict, or no vote)
   is undecided.
   `cm_match` marks both regions; `cm_target` is 1 on the pasted side, 0 on the other, 0.5
   where undecided.
"""

import dataclasses
import logging
from typing import List, Optional, Tuple

import cv2
import numpy as np
import torch
from scipy import ndimage

log = logging.getLogger(__name__)
_EPS = 1e-6
SEAM_NEAR = 6    # px (analysis grid): half-width of the band around a region's boundary
SEAM_FAR = 14    # px: outer limit of the context bands beyond it


@dataclasses.dataclass(frozen=True)
class CopyMoveSettings:
    """Copy-move search settings. Distances are in analysis pixels unless stated otherwise."""

    analysis_side: int = 384        # long side of the grey image analysed (larger: downscaled)
    max_features: int = 1000        # SIFT keypoints kept (strongest first; bounds the latency)
    contrast_threshold: float = 0.005 # SIFT contrast threshold (OpenCV default 0.04): low, to
    #                                   find keypoints in weakly textured copies too
    neighbours: int = 6             # nearest descriptors examined per keypoint (g2NN)
    ratio: float = 0.6              # g2NN: keep neighbour i while d_i / d_(i+1) < ratio
    min_offset: float = 12.0        # matches (and transforms' shifts) shorter than this: ignored
    ransac_threshold: float = 3.0   # RANSAC reprojection error of an inlier
    ransac_iterations: int = 2000   # RANSAC iterations per transform
    min_inliers: int = 6            # matches a transform needs to be considered
    max_scale: float = 2.0          # accepted scale range: 1 / max_scale .. max_scale
    max_transforms: int = 4         # transforms searched for per image
    max_attempts: int = 8           # RANSAC runs per image (rejected transforms included)
    dense_sigma: float = 1.0        # Gaussian blur before the dense comparison (noise, JPEG)
    dense_window: int = 7           # window of the dense comparison (pixels, odd)
    dense_tolerance: float = 0.15   # agree: squared difference <= this x (sum of variances)
    dense_floor: float = 4.0        #   + this (grey levels^2: noise and recompression)
    min_std: float = 2.5            # pixels with a flatter window (grey-level std) never agree
    closing: int = 2                # morphological closing radius of an agreeing region
    min_region: float = 0.004       # smallest kept region, fraction of the analysed image
    min_region_inliers: int = 3     # inlier sources a connected agreeing region must hold
    smooth_margin: float = 0.08     # |log fine-detail ratio| deciding the resampled side
    seam_margin: float = 0.05       # |difference of the two sides' `_seam`| deciding the side
    map_smoothing: int = 5          # box filter of the returned maps (pixels)


def _analysis_grey(rgb: np.ndarray, side: int) -> np.ndarray:
    """uint8 rgb [H, W, 3] -> uint8 grey [h, w] with max(h, w) <= side (area-downscaled)."""
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    h, w = grey.shape
    scale = side / max(h, w)
    if scale < 1.0:
        grey = cv2.resize(grey, (max(16, round(w * scale)), max(16, round(h * scale))),
                          interpolation=cv2.INTER_AREA)
    return grey


def _keypoints(grey: np.ndarray, settings: CopyMoveSettings) -> Tuple[np.ndarray, np.ndarray]:
    """SIFT keypoints of uint8 grey [h, w] -> (positions [n, 2] float32 (x, y), RootSIFT
    descriptors [n, 128] float32, unit L2 norm). n may be 0."""
    sift = cv2.SIFT.create(nfeatures=settings.max_features,
                           contrastThreshold=settings.contrast_threshold)
    points, desc = sift.detectAndCompute(grey, np.full(grey.shape, 255, np.uint8))
    if desc is None or len(points) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    pos = np.array([p.pt for p in points], np.float32)
    desc = np.sqrt(desc / (desc.sum(axis=1, keepdims=True) + _EPS)).astype(np.float32)
    return pos, desc


def _self_matches(pos: np.ndarray, desc: np.ndarray,
                  settings: CopyMoveSettings) -> np.ndarray:
    """g2NN self-matches -> unordered keypoint index pairs [m, 2] (i < j), each pair once."""
    n = len(desc)
    k = min(settings.neighbours + 1, n - 1)
    if k < 2:
        return np.zeros((0, 2), np.int64)
    sq = np.maximum(2.0 - 2.0 * desc @ desc.T, 0.0)                   # squared L2 [n, n]
    near = (np.square(pos[:, None, 0] - pos[None, :, 0])
            + np.square(pos[:, None, 1] - pos[None, :, 1])) < settings.min_offset ** 2
    sq[near] = np.inf                                                 # incl. the diagonal
    # the k + 1 nearest, nearest first (torch's topk: ~6x faster than numpy's argpartition)
    nearest = torch.from_numpy(sq).topk(k + 1, dim=1, largest=False, sorted=True)
    nn, dist = nearest.indices.numpy(), np.sqrt(nearest.values.numpy())
    with np.errstate(invalid="ignore", divide="ignore"):
        passes = dist[:, :-1] < settings.ratio * dist[:, 1:]          # d_i / d_(i+1) < ratio
    keep = np.cumprod(passes & np.isfinite(dist[:, :-1]), axis=1).astype(bool)
    rows, cols = np.nonzero(keep)
    pairs = np.stack([rows, nn[rows, cols]], axis=1)
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)


def _residuals(matrix: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|matrix @ a - b| per point: 2x3 affine, a and b [m, 2] (x, y) -> [m]."""
    mapped = a @ matrix[:, :2].T + matrix[:, 2]
    return np.hypot(*(mapped - b).T)


def _degenerate(matrix: np.ndarray, sources: np.ndarray, settings: CopyMoveSettings) -> bool:
    """True for a transform that is no copy-move: scale outside the accepted range, or moving
    its inlier sources ([m, 2]) by less than `min_offset` on average."""
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if not 1.0 / settings.max_scale <= scale <= settings.max_scale:
        return True
    shift = np.hypot(*(sources @ matrix[:, :2].T + matrix[:, 2] - sources).T)
    return float(np.median(shift)) < settings.min_offset


def _transforms(pos: np.ndarray, pairs: np.ndarray, settings: CopyMoveSettings
                ) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Similarity transforms explaining the matches, found in turn by RANSAC ->
    [(2x3 float64 source -> target matrix, inlier source positions [m, 2])]."""
    found: List[Tuple[np.ndarray, np.ndarray]] = []
    left = pairs
    for _ in range(settings.max_attempts):
        if len(found) >= settings.max_transforms or len(left) < settings.min_inliers:
            break
        a, b = pos[left[:, 0]], pos[left[:, 1]]
        src, dst = np.concatenate([a, b]), np.concatenate([b, a])     # both directions
        matrix, _ = cv2.estimateAffinePartial2D(
            src, dst, method=cv2.RANSAC, ransacReprojThreshold=settings.ransac_threshold,
            maxIters=settings.ransac_iterations, confidence=0.995, refineIters=10)
        if matrix is None:
            break
        forward = _residuals(matrix, a, b) <= settings.ransac_threshold
        backward = _residuals(matrix, b, a) <= settings.ransac_threshold
        inlier = forward | backward
        if inlier.sum() < settings.min_inliers:
            break
        sources = np.where(forward[:, None], a, b)[inlier]
        if not _degenerate(matrix, sources, settings):
            found.append((matrix.astype(np.float64), sources))
        left = left[~inlier]
    return found


def _local_stats(a: np.ndarray, b: np.ndarray, window: int
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window means over float32 images a, b [h, w] -> (mean squared difference, variance of
    a, variance of b), each [h, w]."""
    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (window, window), borderType=cv2.BORDER_REFLECT)

    mean_a, mean_b = box(a), box(b)
    var_a = np.maximum(box(a * a) - mean_a * mean_a, 0.0)
    var_b = np.maximum(box(b * b) - mean_b * mean_b, 0.0)
    return box(np.square(a - b)), var_a, var_b


def _fill(mask: np.ndarray, radius: int) -> np.ndarray:
    """Closing by a disc of `radius`, then holes filled: bool [h, w] -> bool [h, w]."""
    out: np.ndarray = mask.astype(np.uint8)
    if radius > 0:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        out = cv2.morphologyEx(out, cv2.MORPH_CLOSE, disc)
    filled: np.ndarray = ndimage.binary_fill_holes(out > 0)
    return filled


def _localise(smooth: np.ndarray, matrix: np.ndarray, sources: np.ndarray,
              settings: CopyMoveSettings) -> Tuple[np.ndarray, np.ndarray]:
    """Dense regions of one transform on the blurred grey image float32 [h, w] -> (source
    mask, target mask), bool [h, w] each (both empty when nothing verifies)."""
    h, w = smooth.shape
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP                   # out(x) = in(T x)
    moved = cv2.warpAffine(smooth, matrix, (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT)
    inside = cv2.warpAffine(np.ones((h, w), np.uint8), matrix, (w, h),
                            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) > 0  # border: 0
    err, var_a, var_b = _local_stats(smooth, moved, settings.dense_window)
    agree = inside & (err <= settings.dense_tolerance * (var_a + var_b) + settings.dense_floor) \
        & (np.minimum(var_a, var_b) >= settings.min_std ** 2)
    count, labels = cv2.connectedComponents(agree.astype(np.uint8), connectivity=8)
    empty = np.zeros((h, w), bool)
    if count <= 1:
        return empty, empty
    xs = np.clip(np.round(sources[:, 0]).astype(int), 0, w - 1)
    ys = np.clip(np.round(sources[:, 1]).astype(int), 0, h - 1)
    held = np.bincount(labels[ys, xs], minlength=count)
    held[0] = 0
    src = np.isin(labels, np.flatnonzero(held >= settings.min_region_inliers))
    src = _fill(src, settings.closing)
    if src.sum() < settings.min_region * h * w:
        return empty, empty
    dst = cv2.warpAffine(src.astype(np.uint8), matrix, (w, h),
                         flags=cv2.INTER_NEAREST) > 0                # dst(T x) = src(x)
    return src, dst


def _rim(mask: np.ndarray, gradient: np.ndarray) -> float:
    """Mean gradient on the 2-pixel rim around the boundary of bool mask [h, w]."""
    kernel = np.ones((5, 5), np.uint8)
    m = mask.astype(np.uint8)
    ring = (cv2.dilate(m, kernel) > 0) & ~(cv2.erode(m, kernel) > 0)
    return float(gradient[ring].mean()) if ring.any() else 0.0


def _seam(mask: np.ndarray, gradient: np.ndarray) -> float:
    """How much a region's boundary cuts through content: log(mean gradient on the band within
    +-`SEAM_NEAR` px of the boundary of bool mask [h, w] / mean gradient on the bands
    `SEAM_NEAR`..`SEAM_FAR` px inside and outside it). The band is wide because the verified
    region ends a few pixels inside the pasted one (the dense comparison's window); the far
    bands normalise by the content around each region."""
    m = mask.astype(np.uint8)
    near_kernel = np.ones((2 * SEAM_NEAR + 1,) * 2, np.uint8)
    far_kernel = np.ones((2 * SEAM_FAR + 1,) * 2, np.uint8)
    near = (cv2.dilate(m, near_kernel) > 0) & ~(cv2.erode(m, near_kernel) > 0)
    far = (cv2.dilate(m, far_kernel) > 0) & ~(cv2.erode(m, far_kernel) > 0) & ~near
    if not near.any() or not far.any():
        return 0.0
    return float(np.log(gradient[near].mean() + 1.0) - np.log(gradient[far].mean() + 1.0))


def _pasted_side(src: np.ndarray, dst: np.ndarray, bands: Tuple[np.ndarray, np.ndarray],
                 gradient: np.ndarray, settings: CopyMoveSettings) -> float:
    """Which side is the pasted copy: 1.0 the target `dst`, 0.0 the source `src`, 0.5
    undecided. `bands` = (|finest band|, |mid band|) of the grey image, each [h, w]."""
    fine, mid = bands

    def sharpness(mask: np.ndarray) -> float:
        return float(fine[mask].mean() + _EPS) / float(mid[mask].mean() + _EPS)

    smooth = np.log(sharpness(src)) - np.log(sharpness(dst))          # > 0: dst smoother
    if abs(smooth) > settings.smooth_margin:
        return float(smooth > 0)
    # two seam measures vote (+1: dst has the seam, -1: src, 0: below the margin); they fail on
    # different photos, so a conflict stays undecided and one vote decides alone
    rim = np.log(_rim(dst, gradient) + 1.0) - np.log(_rim(src, gradient) + 1.0)
    band = _seam(dst, gradient) - _seam(src, gradient)
    votes = sum(float(np.sign(v)) for v in (rim, band) if abs(v) > settings.seam_margin)
    return 0.5 if votes == 0 else float(votes > 0)


def copy_move_maps(rgb: np.ndarray, settings: CopyMoveSettings = CopyMoveSettings()
                   ) -> np.ndarray:
    """Copy-move evidence of uint8 rgb [H, W, 3] -> float32 [2, h, w] (cm_match, cm_target) on
    the analysis grid (h x w = H x W scaled so that max(h, w) <= `analysis_side`).

    Raises:
        ValueError: rgb is not uint8 [H, W, 3].
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"need uint8 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    grey = _analysis_grey(rgb, settings.analysis_side)
    h, w = grey.shape
    match = np.zeros((h, w), np.float32)
    target = np.zeros((h, w), np.float32)
    pos, desc = _keypoints(grey, settings)
    pairs = _self_matches(pos, desc, settings)
    transforms = _transforms(pos, pairs, settings) if len(pairs) else []
    log.debug("copy-move: %d keypoints, %d matches, %d transforms", len(pos), len(pairs),
              len(transforms))
    if transforms:
        level = grey.astype(np.float32)
        smooth = cv2.GaussianBlur(level, (0, 0), settings.dense_sigma)
        coarse = cv2.GaussianBlur(level, (0, 0), 2.0 * settings.dense_sigma)
        bands = (np.abs(level - smooth), np.abs(smooth - coarse))
        gradient: Optional[np.ndarray] = None
        for matrix, sources in transforms:
            src, dst = _localise(smooth, matrix, sources, settings)
            if not src.any():
                continue
            if gradient is None:
                gx = cv2.Sobel(smooth, cv2.CV_32F, 1, 0)
                gy = cv2.Sobel(smooth, cv2.CV_32F, 0, 1)
                gradient = np.hypot(gx, gy)
            side = _pasted_side(src, dst, bands, gradient, settings)
            match[src | dst] = 1.0
            target[dst] = np.maximum(target[dst], side)
            target[src] = np.maximum(target[src], 1.0 - side)
    size = (settings.map_smoothing, settings.map_smoothing)
    return np.stack([cv2.blur(match, size), cv2.blur(target, size)]).astype(np.float32)
