"""Model-card preprocessing on PIL images, with torchvision's exact semantics but no torchvision.

Resize(S) (shorter side -> S, bilinear, antialiased, long side truncated like torchvision)
-> CenterCrop(S) (torchvision's rounding) -> [0, 1] -> Normalize(mean, std).
"""

from typing import Sequence, Tuple

import numpy as np
import torch
from PIL import Image


def resized_size(width: int, height: int, size: int) -> Tuple[int, int]:
    """(W, H) after torchvision `Resize(size)`: shorter side -> size, longer side truncated."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def center_crop_box(width: int, height: int, size: int) -> Tuple[int, int, int, int]:
    """(left, top, right, bottom) of torchvision `CenterCrop(size)` (uses Python's round)."""
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def resize_and_crop(image: Image.Image, size: int) -> Image.Image:
    """RGB PIL image of any size -> RGB PIL image of size x size."""
    target = resized_size(image.width, image.height, size)
    if target != image.size:
        image = image.resize(target, Image.Resampling.BILINEAR)
    return image.crop(center_crop_box(image.width, image.height, size))


def to_tensor(images: Sequence[Image.Image], size: int, mean: Sequence[float],
              std: Sequence[float]) -> torch.Tensor:
    """List of RGB PIL images -> normalized float32 tensor [B, 3, size, size]."""
    arrays = [np.asarray(resize_and_crop(img, size), dtype=np.uint8) for img in images]
    return normalize_arrays(arrays, mean, std)


def normalize_arrays(arrays: Sequence[np.ndarray], mean: Sequence[float],
                     std: Sequence[float]) -> torch.Tensor:
    """Already-cropped RGB uint8 arrays [S, S, 3] (e.g. detector windows) -> normalized float32
    tensor [B, 3, S, S]; no resize, no crop. Raises ValueError if the arrays differ in shape."""
    if len({a.shape for a in arrays}) != 1:
        raise ValueError("all arrays must have the same shape")
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return batch.sub_(mean_t).div_(std_t)
