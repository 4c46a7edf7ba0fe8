"""Decode image bytes into 8-bit sRGB RGB PIL images within the configured limits.

What a decoded image is (the model sees exactly this, then its own resize/crop):

- the first frame / page of animated GIF/WebP/APNG, multi-page TIFF and MPO (camera/phone JPEGs
  with an MPF segment: previews, HDR gain maps), which counts as JPEG;
- EXIF orientation applied (unless `apply_exif_orientation=False`);
- an embedded ICC profile converted to sRGB (LittleCMS via PIL.ImageCms, perceptual intent); a
  profile LittleCMS cannot use is ignored (logged), as browsers do;
- palette images expanded; alpha (RGBA, LA, palette or tRNS transparency) composited on WHITE:
  out = round((c * a + 255 * (255 - a)) / 255);
- CMYK through its ICC profile, else Pillow's conversion round((255 - c) * (255 - k) / 255);
- 16-bit (I;16, and I read as 16-bit) -> the top 8 bits (v >> 8, as Pillow reads 48-bit RGB);
  an uncompressed TIFF storing its channels in separate planes (PlanarConfiguration 2) with 16
  bits per sample is read by tifffile instead: Pillow 13 reads each such plane byte by byte
  (wrong pixels, no error); compressed ones go through libtiff and are right;
  float (F): values in [0, 1] -> round(v * 255), in [0, 255] -> round(v), otherwise min-max
  scaled to [0, 255]; NaN -> 0.

Limits are checked from the header before any pixel is decoded (`open_image`). Pillow's own
process-wide bomb guard (`PIL.Image.MAX_IMAGE_PIXELS`) is left as it is: it only ever fires above
our `max_image_pixels` (unless that is set above ~179 MP, where Pillow refuses first, reported
as `image_too_large` as well).

Reduced decoding (`reduce_for`): a JPEG at least twice as large as needed is decoded at a DCT
scale of 1/2, 1/4 or 1/8 (Pillow's draft mode) such that its shorter side stays at least
`REDUCED_DECODE_MARGIN` x `reduce_for`; the caller's resize then has real pixels to average.
`settings.reduced_decode=False` gives the full decode, bit-exact.
"""

import contextlib
import io
import logging
from typing import Iterator, Optional

import numpy as np
from PIL import Image, ImageCms, ImageOps, JpegImagePlugin

from vfm_serving.errors import (
    ImageDecodeError,
    ImageTooLarge,
    InvalidImageGeometry,
    MediaTypeMismatch,
    ServingError,
)
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)

# Decoded shorter side >= this x the caller's target side (see tools/decode_fidelity.py for the
# measured fidelity of the choices).
REDUCED_DECODE_MARGIN = 2.0
_FORMAT_ALIASES = {"MPO": "JPEG"}  # an MPO is a JPEG whose first frame is the primary image
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
# TIFF tags (TIFF 6.0) and values read by `misread_by_pillow` / `read_separate_planes`
_TIFF_BITS_PER_SAMPLE, _TIFF_COMPRESSION, _TIFF_SAMPLES_PER_PIXEL = 258, 259, 277
_TIFF_PLANAR_CONFIGURATION = 284
_TIFF_UNCOMPRESSED, _TIFF_SEPARATE_PLANES, _TIFF_ASSOCIATED_ALPHA = 1, 2, 1
_EXIF_ORIENTATION = 0x0112


@contextlib.contextmanager
def _decoding(what: str) -> Iterator[None]:
    """Any failure of Pillow/LittleCMS on these bytes -> ImageDecodeError (bombs: ImageTooLarge).

    Decoders run on untrusted bytes and raise a zoo of exception types (OSError, SyntaxError,
    struct.error, IndexError, ...): each means the bytes are not a usable image.
    """
    try:
        yield
    except ServingError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge("image is larger than the decoder's pixel limit") from None
    except Exception as exc:  # noqa: BLE001 - see docstring: any decoder failure is the bytes'
        raise ImageDecodeError(f"{what} ({type(exc).__name__})") from None


def canonical_format(image: Image.Image) -> Optional[str]:
    """PIL format name, with MPO reported as JPEG."""
    return _FORMAT_ALIASES.get(image.format or "", image.format)


def open_image(data: bytes, settings: ServingSettings) -> Image.Image:
    """Read the header of `data` and check size limits without decoding pixels.

    Returns the lazily-opened PIL image (format known via `.format`; see `canonical_format`).

    Raises:
        ImageDecodeError: no decoder recognises the bytes.
        ImageTooLarge: width*height above `settings.max_image_pixels`.
        InvalidImageGeometry: a side below `min_image_side` or aspect ratio above
            `max_aspect_ratio`.
    """
    with _decoding("bytes are not a decodable image"):
        image = Image.open(io.BytesIO(data))
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
    """Decode `data` into an 8-bit sRGB RGB image (see the module docstring for every rule).

    Args:
        expected_format: PIL format name ("JPEG", "PNG") the bytes must be (an MPO counts as
            "JPEG"), or None for any.
        apply_exif_orientation: False keeps the stored pixel layout (size as in the header).
        reduce_for: the caller will resize the shorter side to this many pixels: with
            `settings.reduced_decode`, a much larger JPEG is decoded at a reduced DCT scale.

    Returns:
        PIL image, mode "RGB", size (W, H) after orientation (and reduction, if any).

    Raises:
        everything `open_image` raises, and ImageDecodeError for truncated/corrupt pixel data;
        MediaTypeMismatch when `expected_format` is given and differs.
    """
    image = open_image(data, settings)
    fmt = canonical_format(image)
    if expected_format is not None and fmt != expected_format:
        raise MediaTypeMismatch(f"declared {expected_format} but the bytes are "
                                f"{fmt or 'unknown'}")
    with _decoding("image data is corrupt or truncated"):
        if reduce_for is not None and settings.reduced_decode and fmt == "JPEG":
            draft_for(image, reduce_for)
        icc_profile = image.info.get("icc_profile")
        if misread_by_pillow(image):
            image = read_separate_planes(data, image)
        else:
            image.load()  # the first frame / page
        if apply_exif_orientation:
            image = _exif_transpose(image)
        image = to_rgb(image, icc_profile)
    return image


def draft_for(image: Image.Image, target_side: int,
              margin: float = REDUCED_DECODE_MARGIN) -> float:
    """Ask a JPEG's decoder for the smallest DCT scale (1, 1/2, 1/4, 1/8) that keeps the shorter
    side >= `margin * target_side`. Call before `load()`. Returns the reduction factor (1 = full
    decode, 2/4/8 otherwise)."""
    if not isinstance(image, JpegImagePlugin.JpegImageFile):
        return 1.0
    width, height = image.size
    need = margin * target_side
    scale = 1
    while scale < 8 and min(width, height) / (scale * 2) >= need:
        scale *= 2
    if scale == 1:
        return 1.0
    # Pillow picks the largest scale whose result is at least the requested size.
    image.draft(None, (width // scale, height // scale))
    return width / image.size[0]


def misread_by_pillow(image: Image.Image) -> bool:
    """Whether `image` (opened, not loaded) is a TIFF that Pillow 13 decodes wrongly: several
    channels in separate planes (PlanarConfiguration 2), uncompressed, more than 8 bits per
    sample."""
    if image.format != "TIFF":
        return False
    tags = image.tag_v2  # type: ignore[attr-defined]  # TiffImageFile
    bits = tags.get(_TIFF_BITS_PER_SAMPLE, 1)
    return (tags.get(_TIFF_PLANAR_CONFIGURATION) == _TIFF_SEPARATE_PLANES
            and tags.get(_TIFF_SAMPLES_PER_PIXEL, 1) > 1
            and tags.get(_TIFF_COMPRESSION, 1) == _TIFF_UNCOMPRESSED
            and max(bits if isinstance(bits, tuple) else (bits,)) > 8)


def read_separate_planes(data: bytes, opened: Image.Image) -> Image.Image:
    """The first page of a `misread_by_pillow` TIFF, read by tifffile: 16-bit samples [S, H, W]
    -> top 8 bits -> "LA", "RGB" or "RGBA" [H, W, S] (unassociated alpha; "RGBa" if the file
    says associated), with `opened`'s EXIF orientation tag kept for `_exif_transpose`.

    Raises:
        ImageDecodeError: not 16-bit, or not 2-4 samples (grey + alpha, RGB, RGB + alpha)."""
    import tifffile  # only these files need it

    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        planes = page.asarray()
        alpha_kind = tuple(page.extrasamples)
    if planes.dtype != np.uint16 or planes.ndim != 3 or not 2 <= planes.shape[0] <= 4:
        raise ImageDecodeError(f"separate-plane TIFF with {planes.dtype} samples of shape "
                               f"{planes.shape} is not supported")
    mode = {2: "LA", 3: "RGB", 4: "RGBA"}[planes.shape[0]]
    if mode == "RGBA" and alpha_kind[:1] == (_TIFF_ASSOCIATED_ALPHA,):
        mode = "RGBa"
    eight_bit = np.moveaxis(planes >> 8, 0, -1).astype(np.uint8)
    image = Image.frombytes(mode, (planes.shape[2], planes.shape[1]), eight_bit.tobytes())
    orientation = opened.getexif().get(_EXIF_ORIENTATION)
    if orientation is not None:
        image.getexif()[_EXIF_ORIENTATION] = orientation
    return image


def _exif_transpose(image: Image.Image) -> Image.Image:
    """EXIF orientation applied; an unreadable EXIF block leaves the image as stored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # noqa: BLE001 - broken metadata must not refuse a good image
        log.warning("EXIF orientation ignored: unreadable EXIF (%s)", type(exc).__name__)
        return image


def to_rgb(image: Image.Image, icc_profile: Optional[bytes] = None) -> Image.Image:
    """Any loaded PIL image -> 8-bit sRGB "RGB" (module docstring: the rules)."""
    image = _to_eight_bit(image)
    alpha: Optional[Image.Image] = None
    if image.mode in ("LA", "RGBA"):
        alpha = image.getchannel("A")
        if alpha.getextrema() == (255, 255):
            alpha = None
        image = image.convert(image.mode[:-1])
    if icc_profile and image.mode in ("L", "RGB", "CMYK", "LAB"):
        image = _icc_to_srgb(image, icc_profile)
    if image.mode == "LAB":
        image = _lab_to_srgb(image)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image if alpha is None else composite_on_white(image, alpha)


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """Palette, 1-bit, premultiplied, transparency-keyed, 16-bit and float images -> one of
    L, LA, RGB, RGBA, CMYK, LAB (8 bits per channel)."""
    mode = image.mode
    if mode in ("P", "PA"):
        keep_alpha = mode == "PA" or "transparency" in image.info
        return image.convert("RGBA" if keep_alpha else "RGB")
    if mode in ("L", "RGB") and "transparency" in image.info:
        return image.convert("LA" if mode == "L" else "RGBA")
    if mode == "1":
        return image.convert("L")
    if mode in ("RGBa", "La"):
        return image.convert(mode.upper())
    if mode in _SIXTEEN_BIT:
        values = np.asarray(image).astype(np.int64)
        return Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8))
    if mode == "F":
        return Image.fromarray(float_to_eight_bit(np.asarray(image, dtype=np.float64)))
    if mode == "YCbCr" or mode == "HSV":
        return image.convert("RGB")
    return image


def float_to_eight_bit(values: np.ndarray) -> np.ndarray:
    """Float pixels -> uint8: [0, 1] -> x255, [0, 255] as is, else min-max; rounded; NaN -> 0."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif low >= 0.0 and high <= 255.0:
        scaled = values
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else values * 0.0
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def composite_on_white(rgb: Image.Image, alpha: Image.Image) -> Image.Image:
    """round((c * a + 255 * (255 - a)) / 255) per channel (no ties: 255 is odd)."""
    colour = np.asarray(rgb, dtype=np.uint32)
    a = np.asarray(alpha, dtype=np.uint32)[..., None]
    out = (colour * a + 255 * (255 - a) + 127) // 255
    return Image.fromarray(out.astype(np.uint8))


def _lab_to_srgb(image: Image.Image) -> Image.Image:
    """CIELab (D50) pixels -> sRGB."""
    transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), _SRGB, "LAB", "RGB")
    converted = ImageCms.applyTransform(image, transform)
    assert converted is not None  # None only when transforming in place
    return converted


def _icc_to_srgb(image: Image.Image, icc_profile: bytes) -> Image.Image:
    """Colour-convert through the embedded profile to sRGB; unusable profile -> unchanged."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        transform = ImageCms.buildTransform(source, _SRGB, image.mode, "RGB",
                                            renderingIntent=ImageCms.Intent.PERCEPTUAL)
        converted = ImageCms.applyTransform(image, transform)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError) as exc:
        log.warning("ICC profile ignored: LittleCMS cannot use it for %s (%s)", image.mode,
                    type(exc).__name__)
        return image
    return converted if converted is not None else image
