"""Classic image forensics as per-pixel maps: evidence that needs no pretrained semantics.

`forensic_maps(rgb)` returns FORENSIC_NAMES maps, each float32 [h, w] on a coarse grid covering the
image (the caller resizes them to its own canvas):

- copy-move (`cm_match`, `cm_target`): the image matched against itself (SIFT keypoints,
  g2NN self-matching, RANSAC similarity transforms, dense verification of each transform; see
  `vfm_serving.detection.copy_move`). `cm_match` marks BOTH the source and the target regions;
  `cm_target` marks the side judged to be the pasted copy, 0.5 where undecided.
- JPEG (`jpeg_block`, `jpeg_misalign`, `ghost_lo`, `ghost_hi`): at the ORIGINAL resolution, the
  8x8 blocking grid of the whole image (its phase found from the image) and, per region, the
  blockiness at that phase and how much another phase dominates locally (a splice keeps its own
  grid); JPEG ghosts: the per-block loss when the image is recompressed at a low and a high
  quality, relative to the image (a region compressed before at that quality loses less).
- from one Laplacian residual of the grey image: `cfa`, its 2x2 periodicity (demosaicing),
  signed by the image's own dominant phase (a region from another camera / resampled loses or
  flips it); resampling (`resample_r1`, `resample_r2`), its lag-1 and lag-2 correlation
  (interpolation correlates neighbouring residuals; sensor noise does not); `noise_level`, the
  log local mean |residual|.
- colour (`chroma`, `grey_fraction`): the mean spread max(R, G, B) - min(R, G, B) and the share
  of grey pixels (colour pasted into a black-and-white photo, or grey into a colour one).

Maps from the JPEG, CFA, resampling, noise and colour groups are relative evidence: the detector
scores them against the image's own distribution (robust z-scores); the copy-move maps are
absolute.
Images above FORENSIC_MAX_PIXELS are analysed downscaled to that many pixels (their JPEG / CFA
traces are then mostly gone; the maps stay defined).
"""

import io
from typing import Dict, Tuple

import cv2
import numpy as np
from PIL import Image
from scipy import ndimage

# re-exported: the copy-move maps moved to their own module
from vfm_serving.detection.copy_move import CopyMoveSettings as CopyMoveSettings
from vfm_serving.detection.copy_move import copy_move_maps as copy_move_maps

CM_NAMES: Tuple[str, ...] = ("cm_match", "cm_target")
RELATIVE_NAMES: Tuple[str, ...] = ("jpeg_block", "jpeg_misalign", "ghost_lo", "ghost_hi", "cfa",
                                   "resample_r1", "resample_r2", "noise_level", "chroma",
                                   "grey_fraction")
FORENSIC_NAMES: Tuple[str, ...] = CM_NAMES + RELATIVE_NAMES
NUM_FORENSIC = len(FORENSIC_NAMES)
BLOCK = 8                      # grid cell of the JPEG / CFA / resampling / noise / colour maps
FORENSIC_MAX_PIXELS = 4_194_304
_EPS = 1e-6
GREY_SPREAD = 2                # a pixel whose max(R, G, B) - min(R, G, B) is at most this is grey
DEFAULT_COPY_MOVE = CopyMoveSettings()


def _grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 luminance [H, W]."""
    x = rgb.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _smooth(x: np.ndarray, size: int = 3) -> np.ndarray:
    """Box mean over size x size grid cells (per channel if [h, w, c])."""
    sizes = (size, size) + (1,) * (x.ndim - 2)
    return ndimage.uniform_filter(x, size=sizes, mode="nearest")


# ----------------------------------------------------------------------------- block maps

def _block_view(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """[H, W] -> view [H//b, b, W//b, b] (cropped to whole blocks, no copy)."""
    h, w = (x.shape[0] // block) * block, (x.shape[1] // block) * block
    return x[:h, :w].reshape(h // block, block, w // block, block)


def _block_mean(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Mean over each block x block cell: float32 [H, W] -> [H//b, W//b] (cropped to whole
    blocks; OpenCV's area resize by an integer factor is exactly this mean, ~10x faster than
    numpy's)."""
    h, w = (x.shape[0] // block) * block, (x.shape[1] // block) * block
    cells = np.ascontiguousarray(x[:h, :w], dtype=np.float32)
    return cv2.resize(cells, (w // block, h // block), interpolation=cv2.INTER_AREA)


def _jpeg_maps(grey: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(jpeg_block, jpeg_misalign) per 8x8 block, at the image's dominant grid phase."""
    dh = np.abs(np.diff(grey, axis=1, append=grey[:, -1:]))
    dv = np.abs(np.diff(grey, axis=0, append=grey[-1:, :]))
    profiles = (_block_view(dh).mean(axis=1),                          # [bh, bw, 8] column phase
                _block_view(dv).mean(axis=3).transpose(0, 2, 1))       # [bh, bw, 8] row phase
    block, misalign = 0.0, 0.0
    for profile in profiles:
        profile = _smooth(profile, 3)
        norm = profile / (profile.mean(-1, keepdims=True) + 0.05)
        phase = int(np.argmax(norm.reshape(-1, BLOCK).mean(0)))
        at_phase = np.log(norm[..., phase] + 0.05)
        block = block + at_phase
        misalign = misalign + np.log(np.delete(norm, phase, axis=-1).max(-1) + 0.05) - at_phase
    return np.asarray(block), np.asarray(misalign)


def _ghosts(grey: np.ndarray, qualities: Tuple[int, int] = (60, 85)) -> Tuple[np.ndarray, ...]:
    """JPEG ghost per block: log mean squared recompression loss at each quality, minus the
    image median."""
    image = Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8))
    maps = []
    for quality in qualities:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        recompressed = np.asarray(Image.open(io.BytesIO(buf.getvalue())), dtype=np.float32)
        loss = _smooth(_block_mean((grey - recompressed) ** 2), 3)
        log_loss = np.log(loss + 0.1)
        maps.append(log_loss - np.median(log_loss))
    return tuple(maps)


def _laplacian_maps(grey: np.ndarray) -> Dict[str, np.ndarray]:
    """From one Laplacian residual r: `cfa` (2x2 periodicity of r^2: energy on the (even, even)
    + (odd, odd) sites vs the others, signed by the image's dominant phase: demosaicing),
    `resample_r1` / `resample_r2` (lag-1 / lag-2 correlation of r, h and v averaged:
    interpolation), `noise_level` (log mean |r|)."""
    # scipy's ndimage.laplace (4-neighbour, reflected borders), ~5x faster
    lap: np.ndarray = np.asarray(cv2.Laplacian(grey, cv2.CV_32F, ksize=1,
                                               borderType=cv2.BORDER_REFLECT))
    lap2 = lap * lap
    energy = _smooth(_block_mean(lap2), 3) + 0.1
    h2, w2 = (lap2.shape[0] // 2) * 2, (lap2.shape[1] // 2) * 2
    quads = lap2[:h2, :w2]
    diag = quads[0::2, 0::2] + quads[1::2, 1::2]
    anti = quads[0::2, 1::2] + quads[1::2, 0::2]
    cfa = np.log(_smooth(_block_mean(diag, BLOCK // 2), 3) + 0.5) \
        - np.log(_smooth(_block_mean(anti, BLOCK // 2), 3) + 0.5)
    out = {"cfa": cfa * np.sign(np.median(cfa) + _EPS)}
    for lag in (1, 2):
        prod = np.zeros_like(lap)
        prod[:, :-lag] = lap[:, :-lag] * lap[:, lag:]
        prod[:-lag] += lap[:-lag] * lap[lag:]
        out[f"resample_r{lag}"] = _smooth(_block_mean(prod), 3) / (2 * energy)
    out["noise_level"] = np.log(_smooth(_block_mean(np.abs(lap)), 2) + 0.5)
    return out


def _colour_maps(rgb: np.ndarray) -> Dict[str, np.ndarray]:
    """Per 8x8 block (3x3-block mean): `chroma`, log(1 + mean of max(R, G, B) - min(R, G, B)),
    and `grey_fraction`, the share of pixels whose spread is at most GREY_SPREAD (colour pasted
    into a black-and-white photo, or grey into a colour one)."""
    # OpenCV's element-wise max / min of the channels: ~20x faster than numpy's max(axis=-1)
    red, green, blue = cv2.split(np.ascontiguousarray(rgb))
    spread = cv2.subtract(cv2.max(cv2.max(red, green), blue), cv2.min(cv2.min(red, green), blue))
    return {"chroma": np.log(1.0 + _smooth(_block_mean(spread.astype(np.float32)), 3)),
            "grey_fraction": _smooth(_block_mean((spread <= GREY_SPREAD).astype(np.float32)), 3)}


def block_maps(rgb: np.ndarray) -> Dict[str, np.ndarray]:
    """The RELATIVE_NAMES maps, each float32 [H//8, W//8], from uint8 rgb [H, W, 3]."""
    grey = _grey(rgb)
    block, misalign = _jpeg_maps(grey)
    ghost_lo, ghost_hi = _ghosts(grey)
    maps = {"jpeg_block": block, "jpeg_misalign": misalign, "ghost_lo": ghost_lo,
            "ghost_hi": ghost_hi, **_laplacian_maps(grey), **_colour_maps(rgb)}
    return {name: maps[name].astype(np.float32) for name in RELATIVE_NAMES}


def _resize_map(values: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """float [h, w] -> float32 `shape` = (H, W) (bilinear)."""
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize(shape[::-1], Image.Resampling.BILINEAR), dtype=np.float32)


def forensic_maps(rgb: np.ndarray, copy_move: CopyMoveSettings = DEFAULT_COPY_MOVE
                  ) -> np.ndarray:
    """All FORENSIC_NAMES maps of uint8 rgb [H, W, 3] (the ORIGINAL pixels) on the 8x8-block
    grid of the analysed image -> float32 [NUM_FORENSIC, H'//8, W'//8] (H' x W' = H x W, or
    less above FORENSIC_MAX_PIXELS). Cell (i, j) covers pixels [8i, 8i+8) x [8j, 8j+8) of the
    analysed image; `sample_at` reads the maps at any point of the original image.

    Raises:
        ValueError: rgb is not [H, W, 3] uint8 with both sides >= 16.
    """
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 16:
        raise ValueError(f"need uint8 [H, W, 3] with sides >= 16, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if h * w > FORENSIC_MAX_PIXELS:
        factor = (FORENSIC_MAX_PIXELS / (h * w)) ** 0.5
        rgb = np.asarray(Image.fromarray(rgb).resize((max(16, int(w * factor)),
                                                      max(16, int(h * factor))),
                                                     Image.Resampling.BILINEAR))
    blocks = block_maps(rgb)
    gh, gw = blocks["noise_level"].shape
    shape = (gh, gw)
    maps = [_resize_map(m, shape) for m in copy_move_maps(rgb, copy_move)]
    maps += [blocks[name].astype(np.float32) for name in RELATIVE_NAMES]
    return np.stack(maps)


def sample_at(maps: np.ndarray, ys: np.ndarray, xs: np.ndarray,
              original_size: Tuple[int, int]) -> np.ndarray:
    """Bilinear read of `forensic_maps` output [M, gh, gw] at points (ys, xs) given in pixels of
    the original W x H image (`original_size` = (W, H)) -> float32 [len(ys), M]."""
    width, height = original_size
    gh, gw = maps.shape[1:]
    # block (i, j) has its centre at analysed pixel 8i + 3.5; analysed = original * (8g / side)
    gy = ys * (gh * BLOCK / height) / BLOCK - 0.5
    gx = xs * (gw * BLOCK / width) / BLOCK - 0.5
    coords = np.stack([gy, gx])
    return np.stack([ndimage.map_coordinates(m, coords, order=1, mode="nearest")
                     for m in maps], axis=-1).astype(np.float32)
