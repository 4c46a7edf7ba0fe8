"""Pictures: slide thumbnails with tissue and tile grid, SAFE mask overlays, PCA-to-RGB maps."""

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

from vfm_client.slide import footprint

TISSUE_TINT = (0, 170, 0)
GRID_COLOR = (20, 60, 220)
MASK_TINT = (255, 0, 0)


def tint(image: Image.Image, mask: np.ndarray, color: Tuple[int, int, int],
         alpha: float) -> Image.Image:
    """RGB `image` with `color` blended at `alpha` where `mask` (bool [H, W]) is True."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {rgb.shape[:2]}")
    out = rgb.copy()
    out[mask] = (1 - alpha) * rgb[mask] + alpha * np.asarray(color, dtype=np.float32)
    return Image.fromarray(np.round(out).astype(np.uint8))


def slide_thumbnail(thumbnail: Image.Image, tissue: np.ndarray,
                    tiles: Iterable[Tuple[int, int]], size: int,
                    slide_size: Tuple[int, int]) -> Image.Image:
    """Thumbnail with the tissue mask tinted green and each kept tile's outline in blue."""
    picture = tint(thumbnail, tissue, TISSUE_TINT, 0.35)
    draw = ImageDraw.Draw(picture)
    for x, y in tiles:
        c0, r0, c1, r1 = footprint(x, y, size, slide_size, thumbnail.size)
        draw.rectangle([c0, r0, c1 - 1, r1 - 1], outline=GRID_COLOR, width=1)
    return picture


def mask_picture(mask: np.ndarray) -> Image.Image:
    """Bool mask -> 8-bit PNG-able image (0 / 255)."""
    return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L")


def overlay(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The image with the edited pixels tinted red (mask aligned with the stored pixels)."""
    return tint(image, mask, MASK_TINT, 0.5)


def pca_rgb(features: np.ndarray, components: int = 3) -> np.ndarray:
    """[n, d] features -> [n, 3] uint8 colours: the first principal components, each scaled
    to 0..255 over its 1st..99th percentile. Signs are fixed (largest loading positive), so the
    picture does not flip between runs. Fewer than 3 components -> the missing channels are 0.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    k = min(components, vt.shape[0])
    basis = vt[:k]
    signs = np.sign(basis[np.arange(k), np.abs(basis).argmax(axis=1)])
    scores = x @ (basis * signs[:, None]).T
    out = np.zeros((x.shape[0], 3), dtype=np.uint8)
    for c in range(k):
        lo, hi = np.percentile(scores[:, c], [1, 99])
        scale = (scores[:, c] - lo) / (hi - lo) if hi > lo else np.zeros(x.shape[0])
        out[:, c] = np.round(np.clip(scale, 0, 1) * 255).astype(np.uint8)
    return out


def model_view(image: Image.Image, input_size: int) -> Image.Image:
    """The crop the model sees (the server's preprocessing, as torchvision's Resize(input_size)
    + CenterCrop(input_size) on a PIL image): shorter side to input_size, bilinear, center crop.
    """
    image = image.convert("RGB")
    w, h = image.size
    if w <= h:
        size = (input_size, int(input_size * h / w))
    else:
        size = (int(input_size * w / h), input_size)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left = int(round((size[0] - input_size) / 2.0))
    top = int(round((size[1] - input_size) / 2.0))
    return image.crop((left, top, left + input_size, top + input_size))


def tile_pca_picture(image: Image.Image, grid: np.ndarray, input_size: int,
                     scale: int = 2) -> Image.Image:
    """[model view | PCA map | blend], each (input_size * scale) square.

    `grid` is the segmentation embedding [D, g, g] of `image`; patch (r, c) is coloured by its
    first three principal components over the tile's g*g patches.
    """
    depth, rows, cols = grid.shape
    colours = pca_rgb(grid.reshape(depth, rows * cols).T).reshape(rows, cols, 3)
    side = input_size * scale
    view = model_view(image, input_size).resize((side, side), Image.Resampling.NEAREST)
    pca = Image.fromarray(colours).resize((side, side), Image.Resampling.NEAREST)
    blend = Image.blend(view, pca, 0.5)
    canvas = Image.new("RGB", (3 * side, side), (255, 255, 255))
    for i, part in enumerate((view, pca, blend)):
        canvas.paste(part, (i * side, 0))
    return canvas


def slide_pca_picture(thumbnail: Image.Image, corners: Sequence[Tuple[int, int]], size: int,
                      slide_size: Tuple[int, int], embeddings: np.ndarray,
                      alpha: float = 0.6, colours: Optional[np.ndarray] = None) -> Image.Image:
    """The thumbnail with each embedded tile's footprint filled with its PCA colour."""
    if colours is None:
        colours = pca_rgb(embeddings)
    base = np.asarray(thumbnail.convert("RGB"), dtype=np.float32)
    out = base.copy()
    for (x, y), colour in zip(corners, colours, strict=True):
        c0, r0, c1, r1 = footprint(x, y, size, slide_size, thumbnail.size)
        out[r0:r1, c0:c1] = (1 - alpha) * base[r0:r1, c0:c1] + alpha * colour.astype(np.float32)
    return Image.fromarray(np.round(out).astype(np.uint8))
