"""Benchmark inputs: JPEGs made from real photos (scikit-image samples, read offline through the
project's one sample-photo helper, tools.sample_photos). Deterministic for a given seed.

    photo_jpegs(32)      32 different 512x512 crops of the photos
    large_jpegs(8)       4000x3000 camera-sized JPEGs (upscaled photo + sensor-like noise, so the
                         file size and entropy-decoding work are a real camera's: ~3.3 MB each)
    varied_jpegs(256)    different sizes (short side 200..1000 px, aspect up to 2:1)
"""

import io
from typing import List, Tuple

import numpy as np
from PIL import Image

from tools.sample_photos import SOURCES, photo

PHOTOS: Tuple[str, ...] = tuple(n for n in SOURCES["scikit-image"] if n != "text")
"""scikit-image's sample photos (the `text` scan is left out: a 448x172 strip, not a photo)."""
JPEG_QUALITY = 90


def encode_jpeg(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """RGB image -> JPEG bytes (4:2:0 chroma subsampling, Pillow's default, like cameras)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _crop(image: Image.Image, width_share: float, aspect: float, rng: np.random.Generator
          ) -> Image.Image:
    """A crop of `image` `width_share` of its width wide with height/width `aspect`, at a
    random place (clamped to the image)."""
    w = max(16, int(image.width * width_share))
    h = max(16, min(image.height, int(w * aspect)))
    left = int(rng.integers(0, image.width - w + 1))
    top = int(rng.integers(0, image.height - h + 1))
    return image.crop((left, top, left + w, top + h))


def photo_jpegs(count: int, size: int = 512, seed: int = 0) -> List[bytes]:
    """`count` different size x size JPEGs: square crops (60-100% of the short side) of the
    photos, resized (Lanczos)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = photo(PHOTOS[i % len(PHOTOS)])
        side = min(image.size)
        share = float(rng.uniform(0.6, 1.0)) * side / image.width
        crop = _crop(image, share, 1.0, rng)
        out.append(encode_jpeg(crop.resize((size, size), Image.Resampling.LANCZOS)))
    return out


def large_jpegs(count: int, size: Tuple[int, int] = (4000, 3000), noise_sigma: float = 8.0,
                seed: int = 1) -> List[bytes]:
    """`count` camera-sized JPEGs (W, H = `size`): a 4:3 crop of a photo upscaled (bicubic) plus
    Gaussian noise of `noise_sigma` grey levels (an upscaled photo alone is unnaturally smooth
    and would compress, and entropy-decode, far faster than a camera's JPEG)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = photo(PHOTOS[(3 * i + 1) % len(PHOTOS)])
        aspect = size[1] / size[0]
        share = min(1.0, image.height / aspect / image.width)
        crop = _crop(image, share, aspect, rng).resize(size, Image.Resampling.BICUBIC)
        pixels = np.asarray(crop, dtype=np.float32)
        pixels += rng.normal(0.0, noise_sigma, size=pixels.shape).astype(np.float32)
        noisy = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        out.append(encode_jpeg(noisy))
    return out


def varied_jpegs(count: int, short_side: Tuple[int, int] = (200, 1000), seed: int = 2
                 ) -> List[bytes]:
    """`count` JPEGs of different sizes: short side uniform in `short_side`, aspect 1:1 to 2:1,
    portrait or landscape, crops of the photos resized (Lanczos)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        image = photo(PHOTOS[i % len(PHOTOS)])
        short = int(rng.integers(short_side[0], short_side[1] + 1))
        long = int(short * rng.uniform(1.0, 2.0))
        w, h = (long, short) if rng.random() < 0.5 else (short, long)
        crop = _crop(image, float(rng.uniform(0.5, 1.0)), h / w, rng)
        out.append(encode_jpeg(crop.resize((w, h), Image.Resampling.LANCZOS)))
    return out
