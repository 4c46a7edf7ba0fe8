"""Tile an image into backbone-sized windows and stitch per-patch scores back to pixels.

Localization must not come from one squashed 224 view: the image is kept at native resolution
(upscaled only when a side is shorter than the window), covered by `window` x `window` crops every
`stride` pixels (the last crop aligned to the border), and downscaled only as far as needed to fit
`max_windows` windows. Per-patch scores of overlapping windows are averaged per pixel.
"""

import dataclasses
import math
from typing import List, Tuple

import numpy as np
import torch
from PIL import Image
from torch.nn import functional


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Where the windows sit. `size` = (W, H) of the scaled image the windows are cut from."""

    original_size: Tuple[int, int]
    size: Tuple[int, int]
    window: int
    boxes: Tuple[Tuple[int, int], ...]  # (top, left) of every window, row-major

    @property
    def num_windows(self) -> int:
        return len(self.boxes)


def window_starts(length: int, window: int, stride: int) -> List[int]:
    """Start offsets covering [0, length) with `window`-long crops; last one ends at `length`.

    Raises:
        ValueError: length < window or stride < 1.
    """
    if length < window or stride < 1:
        raise ValueError(f"cannot tile length {length} with window {window}, stride {stride}")
    count = math.ceil((length - window) / stride) + 1
    if count == 1:
        return [0]
    return [round(i * (length - window) / (count - 1)) for i in range(count)]


def _count(width: int, height: int, window: int, stride: int) -> int:
    """Number of windows tiling a width x height image."""
    return len(window_starts(width, window, stride)) * len(window_starts(height, window, stride))


def plan_tiling(width: int, height: int, window: int, stride: int, max_windows: int) -> Tiling:
    """Choose the scaled size and the window boxes for a width x height image.

    Native size when it fits; upscaled so the short side is >= `window`; downscaled (aspect kept)
    until at most `max_windows` windows are needed; for very elongated images the long side is
    squeezed so `max_windows` windows still cover it.

    Raises:
        ValueError: stride or max_windows below 1, stride above window.
    """
    if stride < 1 or stride > window or max_windows < 1:
        raise ValueError(f"need 1 <= stride <= window and max_windows >= 1 "
                         f"(stride={stride}, window={window}, max_windows={max_windows})")
    floor = window / min(width, height)
    scale = max(1.0, floor)

    def scaled(s: float) -> Tuple[int, int]:
        return max(window, round(width * s)), max(window, round(height * s))

    if _count(*scaled(scale), window, stride) > max_windows:
        lo, hi = floor, scale
        for _ in range(30):  # binary search for the largest scale that fits
            mid = (lo + hi) / 2
            if _count(*scaled(mid), window, stride) <= max_windows:
                lo = mid
            else:
                hi = mid
        scale = lo
    w, h = scaled(scale)
    if _count(w, h, window, stride) > max_windows:  # elongated: squeeze the long side
        limit = window + (max_windows - 1) * stride
        w, h = (min(w, limit), h) if w >= h else (w, min(h, limit))
    boxes = tuple((top, left) for top in window_starts(h, window, stride)
                  for left in window_starts(w, window, stride))
    return Tiling(original_size=(width, height), size=(w, h), window=window, boxes=boxes)


def cut_windows(image: Image.Image, tiling: Tiling) -> np.ndarray:
    """RGB PIL image -> uint8 windows [N, window, window, 3] as planned by `tiling`."""
    if image.size != tiling.size:
        image = image.resize(tiling.size, Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    s = tiling.window
    return np.stack([array[top:top + s, left:left + s] for top, left in tiling.boxes])


def cut_mask_windows(mask: np.ndarray, tiling: Tiling) -> np.ndarray:
    """Binary mask [H, W] (original size) -> float32 windows [N, window, window] in [0, 1]."""
    pil = Image.fromarray((mask > 0).astype(np.uint8) * 255)
    if pil.size != tiling.size:
        pil = pil.resize(tiling.size, Image.Resampling.BILINEAR)
    array = np.asarray(pil, dtype=np.float32) / 255.0
    s = tiling.window
    return np.stack([array[top:top + s, left:left + s] for top, left in tiling.boxes])


def patch_fractions(mask_windows: np.ndarray, patch: int) -> np.ndarray:
    """Mask windows [N, S, S] -> fraction of edited pixels per patch [N, g*g] (row-major)."""
    n, s, _ = mask_windows.shape
    g = s // patch
    m = mask_windows[:, :g * patch, :g * patch].reshape(n, g, patch, g, patch)
    return m.mean(axis=(2, 4)).reshape(n, g * g)


def stitch(scores: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """Per-patch scores [N, g, g] -> per-pixel map [H, W] at the ORIGINAL image size.

    Each window's grid is upsampled bilinearly to window x window, overlaps are averaged, and the
    scaled canvas is resized bilinearly to the original size.
    """
    w, h = tiling.size
    s = tiling.window
    up = functional.interpolate(scores[:, None].float(), size=(s, s), mode="bilinear",
                       align_corners=False)[:, 0]
    canvas = torch.zeros(h, w)
    count = torch.zeros(h, w)
    for (top, left), tile in zip(tiling.boxes, up, strict=True):
        canvas[top:top + s, left:left + s] += tile
        count[top:top + s, left:left + s] += 1
    canvas = canvas / count.clamp_min(1)
    ow, oh = tiling.original_size
    if (ow, oh) != (w, h):
        canvas = functional.interpolate(canvas[None, None], size=(oh, ow), mode="bilinear",
                               align_corners=False)[0, 0]
    return canvas
