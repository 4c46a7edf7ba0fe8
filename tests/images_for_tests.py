"""Test images: real photos shipped in wheels (tools/sample_photos.py) in several formats."""

import base64
import io

from PIL import Image

from tools.sample_photos import photo

__all__ = ["b64", "encode", "photo"]


def encode(image: Image.Image, fmt: str = "PNG", **save_kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save_kwargs)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
