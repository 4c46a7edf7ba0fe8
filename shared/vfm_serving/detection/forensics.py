"""Classic image forensics as per-pixel maps: evidence that needs no pretrained semantics.

`forensic_maps(rgb)` returns FORENSIC_NAMES maps, each float32 [h, w] on a coarse grid covering the
image (the caller resizes them to its own canvas):

- copy-move (`cm_match`, `cm_target`): the image matched against itself. Rotation-invariant
  Gaussian-derivative descriptors on a dense grid of a downscaled grey image, nearest neighbours
  found with a kd-tree within a distance bound and a minimum offset; each point keeps the
  candidate whose displacement is most common in the image, then only matches whose displacement
  agrees with their neighbours' (a consistent displacement field: a copied region, even rotated
  or scaled a little, moves coherently; chance look-alikes do not); each dominant displacement
  is refined to a pixel and verified densely (the image against its own shifted copy), keeping
  connected regions that hold enough of the coherent matches.
  `cm_match` marks BOTH the source and the target regions; `cm_target` marks the side judged
  to be the pasted copy (its rim cuts through content; failing that, it is the smoother side),
  0.5 where undecided.
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

Maps from the JPEG, CFA, resampling and noise groups are relative evidence: the detector scores
them against the image's own distribution (robust z-scores); the copy-move maps are absolute.
Images above FORENSIC_MAX_PIXELS are analysed downscaled to that many pixels (their JPEG / CFA
traces are then mostly gone; the maps stay defined).
"""

import dataclasses
import io
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

CM_NAMES: Tuple[str, ...] = ("cm_match", "cm_target")
RELATIVE_NAMES: Tuple[str, ...] = ("jpeg_block", "jpeg_misalign", "ghost_lo", "ghost_hi", "cfa",
                                   "resample_r1", "resample_r2", "noise_level")
FORENSIC_NAMES: Tuple[str, ...] = CM_NAMES + RELATIVE_NAMES
NUM_FORENSIC = len(FORENSIC_NAMES)
BLOCK = 8                      # grid cell of the JPEG / CFA / resampling / noise maps (pixels)
FORENSIC_MAX_PIXELS = 4_194_304
_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class CopyMoveSettings:
    """Copy-move search settings (defaults: what the shipped heads were trained with)."""

    analysis_side: int = 224        # long side of the grey image the search runs on
    step: int = 2                   # grid step of the dense descriptors (analysis pixels)
    min_offset: float = 14.0        # shortest displacement accepted (analysis pixels)
    neighbours: int = 10            # nearest descriptors examined per grid point
    offset_bin: float = 4.0         # displacement histogram bin (analysis pixels)
    min_votes: int = 25             # grid points voting for a displacement (3x3 bins) to keep it
    field_radius: int = 3           # grid cells around a match that vote on its displacement
    field_tolerance: float = 2.5    # displacement difference still counted as agreeing (pixels)
    min_agreement: float = 0.25     # fraction of voting neighbours that must agree
    max_offsets: int = 3            # displacements verified densely
    dense_tolerance: float = 0.1    # dense match: squared difference <= this x local variance
    dense_floor: float = 6.0        #   + this (grey levels^2: noise and recompression)
    max_distance: float = 0.7       # descriptor distance (in image-std units) for a match
    min_region: float = 0.003       # smallest kept region, fraction of the analysed image
    min_texture: float = 0.15       # descriptors of flatter blocks (x image median) are skipped


def _grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] -> float32 luminance [H, W]."""
    x = rgb.astype(np.float32)
    return 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]


def _smooth(x: np.ndarray, size: int = 3) -> np.ndarray:
    """Box mean over size x size grid cells (per channel if [h, w, c])."""
    sizes = (size, size) + (1,) * (x.ndim - 2)
    return ndimage.uniform_filter(x, size=sizes, mode="nearest")


# ----------------------------------------------------------------------------- copy-move

def _descriptors(grey: np.ndarray) -> np.ndarray:
    """Rotation-invariant Gaussian-derivative descriptors [H, W, 8], each scaled to unit std."""
    feats = [ndimage.gaussian_filter(grey, 1.0), ndimage.gaussian_filter(grey, 2.5),
             ndimage.gaussian_gradient_magnitude(grey, 1.0),
             ndimage.gaussian_gradient_magnitude(grey, 2.0),
             ndimage.gaussian_laplace(grey, 1.0), ndimage.gaussian_laplace(grey, 2.0),
             ndimage.gaussian_laplace(grey, 3.0), ndimage.gaussian_gradient_magnitude(grey, 3.0)]
    stack = np.stack(feats, axis=-1)
    return stack / (stack.reshape(-1, stack.shape[-1]).std(0) + _EPS)


def copy_move_maps(rgb: np.ndarray, settings: CopyMoveSettings = CopyMoveSettings()
                   ) -> np.ndarray:
    """Copy-move evidence [2, h, w] (cm_match, cm_target) on the analysis image (long side
    `analysis_side`) of uint8 rgb [H, W, 3]."""
    h, w = rgb.shape[:2]
    scale = min(1.0, settings.analysis_side / max(h, w))
    image = Image.fromarray(rgb)
    if scale < 1.0:
        image = image.resize((max(16, round(w * scale)), max(16, round(h * scale))),
                             Image.Resampling.BILINEAR)
    grey = _grey(np.asarray(image))
    desc = _descriptors(grey)
    fine = ndimage.uniform_filter(np.abs(ndimage.laplace(grey)), 5)
    texture = np.sqrt(np.maximum(ndimage.uniform_filter(grey ** 2, 9)
                                 - ndimage.uniform_filter(grey, 9) ** 2, 0))
    s = settings.step
    grid_desc = desc[::s, ::s]
    gh, gw = grid_desc.shape[:2]
    ys, xs = np.mgrid[0:gh, 0:gw]
    pos = np.stack([ys.ravel() * s, xs.ravel() * s], axis=1).astype(np.float32)
    feats = grid_desc.reshape(-1, grid_desc.shape[-1])
    tex = texture[::s, ::s].ravel()
    valid = tex > settings.min_texture * max(float(np.median(tex)), 1.0)
    partner = np.full(len(feats), -1, np.int64)
    idx_valid = np.flatnonzero(valid)
    if len(idx_valid) > settings.neighbours:
        partner[idx_valid] = _vote_partners(feats, pos, idx_valid, settings)
    matched = partner >= 0
    offset = np.where(matched[:, None], pos[np.maximum(partner, 0)] - pos, np.nan)
    agree = _field_agreement(offset.reshape(gh, gw, 2), settings.field_radius,
                             settings.field_tolerance)
    keep = _drop_small(matched.reshape(gh, gw) & (agree >= settings.min_agreement),
                       settings.min_region * gh * gw)
    sources = np.flatnonzero(keep.ravel())
    kept_pos, kept_off = pos[sources], offset[sources]
    match = np.zeros(grey.shape, bool)
    target = np.zeros(grey.shape, np.float32)
    gradient = ndimage.gaussian_gradient_magnitude(grey, 1.0)
    for shift in _dominant_offsets(kept_off, settings):
        # seeds as SOURCE positions: matches seen from the target side point back by -d
        near = np.hypot(*(kept_off - shift).T) <= 2 * settings.offset_bin
        back = np.hypot(*(kept_off + shift).T) <= 2 * settings.offset_bin
        seeds = np.concatenate([kept_pos[near], kept_pos[back] + kept_off[back]])
        src, dst = _verify_offset(grey, texture, shift, seeds, settings)
        if not src.any():
            continue
        src_value = _source_is_target(src, dst, fine, gradient)
        target[src] = np.maximum(target[src], src_value)
        target[dst] = np.maximum(target[dst], 1.0 - src_value)
        match |= src | dst
    match_map = ndimage.uniform_filter(match.astype(np.float32), 5)
    target_map = ndimage.uniform_filter(target, 5)
    return np.stack([match_map, target_map.astype(np.float32)])


def _source_is_target(first: np.ndarray, second: np.ndarray, fine: np.ndarray,
                      gradient: np.ndarray) -> float:
    """Which of two matched regions is the pasted copy: 1.0 if `first`, 0.0 if `second`, 0.5
    if undecided. The copy's border cuts through content (a seam: more gradient on its rim than
    on the rim of the intact original, whose interior is the same content); failing that, the
    copy is the smoother side (rotation, scaling, recompression remove fine detail)."""
    def rim(mask: np.ndarray) -> float:
        ring = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(
            mask, iterations=2)
        return float(gradient[ring].mean()) if ring.any() else 0.0

    seam = np.log(rim(first) + 1.0) - np.log(rim(second) + 1.0)
    if abs(seam) > 0.05:
        return float(seam > 0)
    first_fine, second_fine = float(fine[first].mean()), float(fine[second].mean())
    if abs(first_fine - second_fine) <= 0.05 * (first_fine + second_fine + _EPS):
        return 0.5
    return float(first_fine < second_fine)


def _vote_partners(feats: np.ndarray, pos: np.ndarray, idx: np.ndarray,
                   settings: "CopyMoveSettings") -> np.ndarray:
    """For each grid point in `idx`, the partner index (or -1) among its nearest descriptors
    (within `max_distance`, at least `min_offset` away) whose displacement is most common in the
    whole image: a copied region votes coherently for one displacement (a few neighbouring bins
    when rotated or scaled), chance look-alikes spread over many."""
    tree = cKDTree(feats[idx])
    dist, nn = tree.query(feats[idx], k=settings.neighbours,
                          distance_upper_bound=settings.max_distance)
    other = idx[np.minimum(nn, len(idx) - 1)]
    offs = pos[other] - pos[idx][:, None]                               # [n, k, 2]
    ok = np.isfinite(dist) & (np.hypot(offs[..., 0], offs[..., 1]) >= settings.min_offset)
    sign = np.where((offs[..., 0] > 0) | ((offs[..., 0] == 0) & (offs[..., 1] > 0)), 1.0, -1.0)
    bins = np.round(offs * sign[..., None] / settings.offset_bin).astype(np.int64)
    span = int(np.abs(bins).max()) + 2  # over ALL bins: the lookups below index every one
    counts = np.zeros((2 * span + 1, 2 * span + 1), np.float32)
    np.add.at(counts, (bins[ok][:, 0] + span, bins[ok][:, 1] + span), 1.0)
    support = ndimage.uniform_filter(counts, 3, mode="constant") * 9.0
    needed = max(settings.min_votes, settings.min_region * len(feats))
    score = np.where(ok, support[bins[..., 0] + span, bins[..., 1] + span], 0.0)
    score = np.where(score >= needed, score, 0.0)
    choice = np.argmax(score, axis=1)
    rows = np.arange(len(idx))
    return np.where(score[rows, choice] > 0, other[rows, choice], -1)


def _field_agreement(field: np.ndarray, radius: int, tolerance: float) -> np.ndarray:
    """Fraction of the (2r+1)^2 neighbours whose displacement is within `tolerance` pixels of
    the centre's (NaN = no match, never agrees): [gh, gw, 2] -> [gh, gw]."""
    gh, gw = field.shape[:2]
    padded = np.pad(field, ((radius, radius), (radius, radius), (0, 0)), constant_values=np.nan)
    count = np.zeros((gh, gw), np.float32)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            other = padded[dy:dy + gh, dx:dx + gw]
            with np.errstate(invalid="ignore"):
                count += np.hypot(*(other - field).transpose(2, 0, 1)) <= tolerance
    return count / float((2 * radius + 1) ** 2)


def _dominant_offsets(offsets: np.ndarray, settings: "CopyMoveSettings") -> List[np.ndarray]:
    """Up to `max_offsets` displacements (analysis pixels, canonical sign) shared by at least
    `min_votes` // 2 coherent matches; each the median of its histogram bin's members."""
    if len(offsets) == 0:
        return []
    sign = np.where((offsets[:, 0] > 0) | ((offsets[:, 0] == 0) & (offsets[:, 1] > 0)), 1., -1.)
    canon = offsets * sign[:, None]
    bins = np.round(canon / settings.offset_bin).astype(np.int64)
    _, inverse, counts = np.unique(bins, axis=0, return_inverse=True, return_counts=True)
    out: List[np.ndarray] = []
    for k in np.argsort(-counts)[:settings.max_offsets]:
        if counts[k] < settings.min_votes // 2:
            break
        out.append(np.median(canon[inverse.ravel() == k], axis=0))
    return out


def _verify_offset(grey: np.ndarray, texture: np.ndarray, shift: np.ndarray, seeds: np.ndarray,
                   settings: "CopyMoveSettings") -> Tuple[np.ndarray, np.ndarray]:
    """Dense check of one displacement d: pixels x where the image around x matches the image
    around x + d (squared difference small against the local variance), kept only in connected
    regions that contain enough of the sparse coherent matches `seeds` ([n, 2] source positions,
    analysis pixels). Returns (source mask, target mask) [H, W]."""
    h, w = grey.shape
    if len(seeds) == 0:
        return np.zeros(grey.shape, bool), np.zeros(grey.shape, bool)
    seed_ys = np.clip(np.round(seeds[:, 0]).astype(int), 0, h - 1)
    seed_xs = np.clip(np.round(seeds[:, 1]).astype(int), 0, w - 1)
    refined = shift
    best_err = np.inf
    for dy in range(-2, 3):  # the histogram bin is coarse: refine the displacement to a pixel
        for dx in range(-2, 3):
            candidate = shift + np.array([dy, dx], np.float64)
            ty = np.clip(np.round(seed_ys + candidate[0]).astype(int), 0, grey.shape[0] - 1)
            tx = np.clip(np.round(seed_xs + candidate[1]).astype(int), 0, grey.shape[1] - 1)
            value = float(np.median(np.abs(grey[seed_ys, seed_xs] - grey[ty, tx])))
            if value < best_err:
                best_err, refined = value, candidate
    shift = np.round(refined)
    moved = ndimage.shift(grey, -shift, order=0, mode="nearest")       # moved(x) = grey(x + d)
    err = ndimage.uniform_filter((grey - moved) ** 2, 7)
    floor = settings.min_texture * max(float(np.median(texture)), 1.0)
    similar = (err <= settings.dense_tolerance * (texture ** 2) + settings.dense_floor) \
        & (texture > 2 * floor)
    dy, dx = int(round(shift[0])), int(round(shift[1]))
    inside = np.zeros_like(similar)
    inside[max(0, -dy):min(h, h - dy), max(0, -dx):min(w, w - dx)] = True
    similar &= inside
    labels, n = ndimage.label(similar)
    if n == 0:
        return similar, similar
    per_label = np.bincount(labels[seed_ys, seed_xs], minlength=n + 1)
    per_label[0] = 0
    src = np.isin(labels, np.flatnonzero(per_label >= settings.min_votes // 3))
    src = _drop_small(src, settings.min_region * h * w)
    dst = ndimage.shift(src.astype(np.float32), shift, order=0, mode="constant") > 0.5
    return src, dst


def _drop_small(mask: np.ndarray, min_cells: float) -> np.ndarray:
    """Remove connected components (8-connected) smaller than `min_cells`."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, n + 1))
    return np.isin(labels, np.flatnonzero(sizes >= min_cells) + 1)


# ----------------------------------------------------------------------------- block maps

def _block_view(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """[H, W] -> view [H//b, b, W//b, b] (cropped to whole blocks, no copy)."""
    h, w = (x.shape[0] // block) * block, (x.shape[1] // block) * block
    return x[:h, :w].reshape(h // block, block, w // block, block)


def _block_mean(x: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Mean over each block x block cell: [H, W] -> [H//b, W//b]."""
    return _block_view(x, block).mean(axis=(1, 3))


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
    lap = ndimage.laplace(grey)
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


def block_maps(rgb: np.ndarray) -> Dict[str, np.ndarray]:
    """The RELATIVE_NAMES maps, each float32 [H//8, W//8], from uint8 rgb [H, W, 3]."""
    grey = _grey(rgb)
    block, misalign = _jpeg_maps(grey)
    ghost_lo, ghost_hi = _ghosts(grey)
    maps = {"jpeg_block": block, "jpeg_misalign": misalign, "ghost_lo": ghost_lo,
            "ghost_hi": ghost_hi, **_laplacian_maps(grey)}
    return {name: maps[name].astype(np.float32) for name in RELATIVE_NAMES}


def _resize_map(values: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """float [h, w] -> float32 `shape` = (H, W) (bilinear)."""
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize(shape[::-1], Image.Resampling.BILINEAR), dtype=np.float32)


def forensic_maps(rgb: np.ndarray, copy_move: CopyMoveSettings = CopyMoveSettings()
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
