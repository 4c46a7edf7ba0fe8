"""Whole-slide images: open, tile geometry at a target microns-per-pixel, tissue filter, tiles.

Geometry (all exact integer arithmetic on the chosen level's pixel grid):
- wanted downsample d = target_mpp / slide_mpp;
- level = the coarsest pyramid level whose downsample is at most 1% above d (level 0 if none);
- read_px = round(tile_px * d / level_downsample): the tile's side in that level's pixels, read
  and resized (bilinear, antialiased) to tile_px (no resize when read_px == tile_px);
- tiles are whole read_px x read_px squares of the level, row-major, from its top-left corner;
  a tile's level-0 corner is (round(i * read_px * ds), round(j * read_px * ds)) and it spans
  size = round(read_px * ds) level-0 pixels; its effective mpp is read_px * ds * slide_mpp /
  tile_px (equal to the target when the pyramid has the exact level).
Tissue: a thumbnail (>= 8 px per tile side or a long side of 1024, whichever is larger; long
side <= 4096) is converted to HSV; pixels whose
saturation is above max(Otsu's threshold, min_saturation) are tissue; a tile is kept when at least
`min_tissue` of its thumbnail footprint is tissue.
"""

import dataclasses
import logging
import math
import threading
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from vfm_client.errors import RunError

log = logging.getLogger(__name__)

LEVEL_TOLERANCE = 0.01
THUMBNAIL_PX_PER_TILE = 8
THUMBNAIL_MIN_SIDE = 1024
THUMBNAIL_MAX_SIDE = 4096
MPP_PROPERTIES = (("openslide.mpp-x", "openslide.mpp-y"), ("tiffslide.mpp-x", "tiffslide.mpp-y"))


class Slide:
    """A slide opened with OpenSlide (openslide-bin wheel) or tiffslide, one interface.

    Raises (constructor):
        RunError: no reader installed, or no reader can open the file.
    """

    def __init__(self, path: Path, backend: str = "auto") -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise RunError(f"slide not found: {self.path}")
        errors: List[str] = []
        self._handle: Any = None
        for name in (("openslide", "tiffslide") if backend == "auto" else (backend,)):
            try:
                self._handle = _open(name, self.path)
                self.backend = name
                break
            except ImportError as exc:
                errors.append(f"{name} not installed ({exc}); pip install 'vfm-client[slide]'")
            except Exception as exc:  # noqa: BLE001  (each reader raises its own types)
                errors.append(f"{name}: {type(exc).__name__}: {exc}")
        if self._handle is None:
            raise RunError(f"cannot open slide {self.path}: " + "; ".join(errors))
        # tiffslide's zarr-backed reads are not documented as thread-safe: serialize them.
        self._lock = threading.Lock() if self.backend == "tiffslide" else None

    @property
    def dimensions(self) -> Tuple[int, int]:
        return tuple(self._handle.dimensions)

    @property
    def level_dimensions(self) -> List[Tuple[int, int]]:
        return [tuple(d) for d in self._handle.level_dimensions]

    @property
    def level_downsamples(self) -> List[float]:
        return [float(d) for d in self._handle.level_downsamples]

    def mpp(self) -> Optional[float]:
        """Microns per level-0 pixel from the slide's metadata (mean of x and y), or None."""
        props = self._handle.properties
        for keys in MPP_PROPERTIES:
            values = [_positive_float(props.get(k)) for k in keys]
            found = [v for v in values if v is not None]
            if found:
                if len(found) == 2 and abs(found[0] - found[1]) > 0.01 * found[0]:
                    log.warning("slide pixels are not square (mpp-x %g, mpp-y %g): using the "
                                "mean", *found)
                return float(sum(found) / len(found))
        return None

    def read(self, location: Tuple[int, int], level: int, size: Tuple[int, int]) -> Image.Image:
        """RGB region (transparent pixels composited on white). `location` in level-0 pixels."""
        if self._lock is not None:
            with self._lock:
                region = self._handle.read_region(location, level, size)
        else:
            region = self._handle.read_region(location, level, size)
        return to_rgb(region)

    def close(self) -> None:
        self._handle.close()


def _open(name: str, path: Path) -> Any:
    if name == "openslide":
        import openslide
        return openslide.OpenSlide(str(path))
    if name == "tiffslide":
        import tiffslide
        return tiffslide.TiffSlide(str(path))
    raise ValueError(f"unknown slide backend {name!r}")


def _positive_float(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def to_rgb(region: Any) -> Image.Image:
    """PIL image or array region -> RGB, transparent pixels composited onto white."""
    image = region if isinstance(region, Image.Image) else Image.fromarray(np.asarray(region))
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    return image.convert("RGB")


@dataclasses.dataclass(frozen=True)
class TileGeometry:
    """How tiles are cut: see the module docstring."""

    slide_mpp: float
    target_mpp: float
    tile_px: int
    level: int
    downsample: float
    read_px: int

    @property
    def step(self) -> float:
        """Level-0 pixels between tile corners (= the span of a tile)."""
        return self.read_px * self.downsample

    @property
    def size(self) -> int:
        return int(round(self.step))

    @property
    def mpp(self) -> float:
        """Effective microns per pixel of the tile as sent."""
        return self.step * self.slide_mpp / self.tile_px


def choose_level(downsamples: Sequence[float], wanted: float,
                 tolerance: float = LEVEL_TOLERANCE) -> int:
    """The coarsest level whose downsample is <= wanted * (1 + tolerance); 0 if none is."""
    fitting = [i for i, d in enumerate(downsamples) if d <= wanted * (1 + tolerance)]
    return max(fitting, key=lambda i: downsamples[i]) if fitting else 0


def tile_geometry(downsamples: Sequence[float], slide_mpp: float, target_mpp: float,
                  tile_px: int) -> TileGeometry:
    """Level choice and tile side for tiles of `tile_px` at `target_mpp`.

    Raises:
        RunError: non-positive mpp or tile size.
    """
    if slide_mpp <= 0 or target_mpp <= 0 or tile_px < 1:
        raise RunError("mpp values and the tile size must be positive")
    wanted = target_mpp / slide_mpp
    level = choose_level(downsamples, wanted)
    downsample = float(downsamples[level])
    read_px = max(1, int(round(tile_px * wanted / downsample)))
    if wanted < 1:
        log.warning("target %.3g mpp is finer than the slide's %.3g mpp: tiles are upsampled",
                    target_mpp, slide_mpp)
    return TileGeometry(slide_mpp, target_mpp, tile_px, level, downsample, read_px)


def tile_grid(level_width: int, level_height: int, geometry: TileGeometry
              ) -> List[Tuple[int, int]]:
    """Level-0 top-left corners of every whole tile, row-major."""
    nx = level_width // geometry.read_px
    ny = level_height // geometry.read_px
    return [(int(round(i * geometry.step)), int(round(j * geometry.step)))
            for j in range(ny) for i in range(nx)]


def read_tile(slide: Slide, geometry: TileGeometry, x: int, y: int) -> Image.Image:
    """The tile at level-0 corner (x, y), as a tile_px x tile_px RGB image."""
    tile = slide.read((x, y), geometry.level, (geometry.read_px, geometry.read_px))
    if geometry.read_px != geometry.tile_px:
        tile = tile.resize((geometry.tile_px, geometry.tile_px), Image.Resampling.BILINEAR)
    return tile


def thumbnail_size(width: int, height: int, tile_size: int,
                   px_per_tile: int = THUMBNAIL_PX_PER_TILE,
                   min_side: int = THUMBNAIL_MIN_SIDE,
                   max_side: int = THUMBNAIL_MAX_SIDE) -> Tuple[int, int]:
    """(w, h) of the tissue thumbnail: at least `px_per_tile` pixels per tile side or a long
    side of `min_side` (whichever is larger), at most `max_side`, never above level 0."""
    long_side = max(width, height)
    downsample = min(tile_size / px_per_tile, long_side / min_side)
    downsample = max(1.0, downsample, long_side / max_side)
    return max(1, int(round(width / downsample))), max(1, int(round(height / downsample)))


def read_thumbnail(slide: Slide, size: Tuple[int, int]) -> Image.Image:
    """The whole slide at `size` (w, h): the finest level not finer than needed, resized."""
    width, height = slide.dimensions
    level = choose_level(slide.level_downsamples, min(width / size[0], height / size[1]))
    region = slide.read((0, 0), level, slide.level_dimensions[level])
    return region.resize(size, Image.Resampling.BILINEAR)


def saturation(image: Image.Image) -> np.ndarray:
    """HSV saturation (uint8, 0..255) of an RGB image, as Pillow computes it."""
    return np.asarray(image.convert("RGB").convert("HSV"))[..., 1]


def otsu_threshold(values: np.ndarray) -> int:
    """Otsu's threshold of uint8 values: pixels > threshold are the upper class. A constant
    input returns its value (nothing is above it)."""
    values = np.asarray(values, dtype=np.uint8).ravel()
    low, high = int(values.min()), int(values.max())
    if low == high:
        return low
    hist = np.bincount(values - low, minlength=high - low + 1).astype(np.float64)
    centers = np.arange(low, high + 1, dtype=np.float64)
    weight1 = np.cumsum(hist)
    weight2 = np.cumsum(hist[::-1])[::-1]
    mean1 = np.cumsum(hist * centers) / weight1
    mean2 = (np.cumsum((hist * centers)[::-1]) / weight2[::-1])[::-1]
    between = weight1[:-1] * weight2[1:] * (mean1[:-1] - mean2[1:]) ** 2
    return int(centers[int(np.argmax(between))])


def tissue_mask(thumbnail: Image.Image, min_saturation: int) -> Tuple[np.ndarray, int]:
    """(bool mask [h, w], threshold): saturation > max(Otsu, min_saturation)."""
    sat = saturation(thumbnail)
    threshold = max(otsu_threshold(sat), int(min_saturation))
    return sat > threshold, threshold


def footprint(x: int, y: int, size: int, slide_size: Tuple[int, int],
              thumb_size: Tuple[int, int]) -> Tuple[int, int, int, int]:
    """Thumbnail pixel box (c0, r0, c1, r1) covering a level-0 square, at least 1 px."""
    (width, height), (tw, th) = slide_size, thumb_size
    c0, r0 = (x * tw) // width, (y * th) // height
    c1 = max(c0 + 1, -((-(x + size) * tw) // width))
    r1 = max(r0 + 1, -((-(y + size) * th) // height))
    return c0, r0, min(c1, tw), min(r1, th)


def tissue_fraction(mask: np.ndarray, x: int, y: int, size: int,
                    slide_size: Tuple[int, int]) -> float:
    """Fraction of tissue pixels in a tile's thumbnail footprint."""
    c0, r0, c1, r1 = footprint(x, y, size, slide_size, (mask.shape[1], mask.shape[0]))
    return float(mask[r0:r1, c0:c1].mean())
