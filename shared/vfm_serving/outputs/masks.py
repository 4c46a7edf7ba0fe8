"""Binary localization masks -> PNG (1-bit greyscale, values 0/1), as the SAFE API expects."""

import base64
import io

import numpy as np
from PIL import Image


def mask_to_png(mask: np.ndarray) -> bytes:
    """Binary mask [H, W] (any dtype; non-zero = edited) -> 1-bit PNG bytes of width W, height H.

    Raises:
        ValueError: `mask` is not 2-D or is empty.
    """
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"mask must be a non-empty 2-D array, got shape {mask.shape}")
    image = Image.fromarray(np.ascontiguousarray(mask != 0))  # bool -> mode "1"
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def mask_to_base64_png(mask: np.ndarray) -> str:
    """Binary mask [H, W] -> base64 (standard alphabet) of its 1-bit PNG."""
    return base64.b64encode(mask_to_png(mask)).decode("ascii")
