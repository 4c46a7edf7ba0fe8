"""Test images: real photos from scikit-image (shipped in its wheel), several formats and sizes."""

import base64
import io
from typing import Optional

from PIL import Image


def photo(name: str = "astronaut", size: Optional[tuple] = None) -> Image.Image:
    """A scikit-image sample photo as RGB, optionally resized to (W, H)."""
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    return image.resize(size, Image.BICUBIC) if size else image


def encode(image: Image.Image, fmt: str = "PNG", **save_kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
