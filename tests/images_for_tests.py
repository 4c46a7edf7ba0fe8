"""Test images: real photos shipped in wheels (tools/sample_photos.py) in several formats."""

import base64
import io

import numpy as np
from PIL import Image

from tools.sample_photos import photo

__all__ = ["b64", "encode", "photo", "separate_planes_tiff"]


def encode(image: Image.Image, fmt: str = "PNG", **save_kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def separate_planes_tiff(planes: np.ndarray, **options: object) -> bytes:
    """planes [S, H, W] written by tifffile with PlanarConfiguration 2 (a plane per channel)."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, planes, planarconfig="separate", **options)
    return buf.getvalue()
