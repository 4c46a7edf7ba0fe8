"""Decode image bytes into RGB PIL images within the configured limits."""

import io
from typing import Optional

from PIL import Image, ImageOps, UnidentifiedImageError

from vfm_serving.errors import (ImageDecodeError, ImageTooLarge, InvalidImageGeometry,
                                MediaTypeMismatch)
from vfm_serving.settings import ServingSettings

# PIL's own bomb check (DecompressionBombError at 2x this) is replaced by ours: we compare the
# header's size with `max_image_pixels` before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = None


def open_image(data: bytes, settings: ServingSettings) -> Image.Image:
    """Read the header of `data` and check size limits without decoding pixels.

    Returns the lazily-opened PIL image (format known via `.format`).

    Raises:
        ImageDecodeError: no decoder recognises the bytes.
        ImageTooLarge: width*height above `settings.max_image_pixels`.
        InvalidImageGeometry: a side below `min_image_side` or aspect ratio above `max_aspect_ratio`.
    """
    try:
        image = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageDecodeError(f"bytes are not a decodable image ({type(exc).__name__})") from None
    width, height = image.size
    if width * height > settings.max_image_pixels:
        raise ImageTooLarge(f"image is {width}x{height} pixels; the limit is "
                            f"{settings.max_image_pixels} pixels")
    if min(width, height) < settings.min_image_side:
        raise InvalidImageGeometry(f"image is {width}x{height}; each side must be at least "
                                   f"{settings.min_image_side} pixels")
    if max(width, height) / min(width, height) > settings.max_aspect_ratio:
        raise InvalidImageGeometry(f"image is {width}x{height}; aspect ratio above "
                                   f"{settings.max_aspect_ratio:g} is not accepted")
    return image


def decode_rgb(data: bytes, settings: ServingSettings, *,
               expected_format: Optional[str] = None,
               apply_exif_orientation: bool = True,
               reduce_for: Optional[int] = None) -> Image.Image:
    """Decode `data` fully into an RGB image, by default with its EXIF orientation applied.

    Args:
        expected_format: PIL format name ("JPEG", "PNG") the bytes must be, or None for any.
        apply_exif_orientation: False keeps the stored pixel layout (size as in the header).

    Returns:
        PIL image, mode "RGB", size (W, H) after orientation.

    Raises:
        everything `open_image` raises, and ImageDecodeError for truncated/corrupt pixel data;
        MediaTypeMismatch when `expected_format` is given and differs.
    """
    image = open_image(data, settings)
    if expected_format is not None and image.format != expected_format:
        raise MediaTypeMismatch(f"declared {expected_format} but the bytes are "
                                f"{image.format or 'unknown'}")
    try:
        image.load()
        if apply_exif_orientation:
            image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            image = _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageDecodeError(f"image data is corrupt or truncated ({type(exc).__name__})") from None
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode to RGB. Alpha is dropped (`Image.convert("RGB")`, what the model card's
    `.convert("RGB")` does); 16-bit greyscale ("I;16", or "I" read as a 16-bit range) is scaled
    to 8 bits instead of clipped."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping.
        image = image.point(lambda v: v * (1 / 256)).convert("L")
    return image.convert("RGB")
