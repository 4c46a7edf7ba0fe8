"""Cross-check evaluation set: differently styled edits on WHOLE evaluation-only photos.

Purpose: a second, independently written generator of a labelled, masked evaluation set, used
only to cross-check tools/safe/synth.py's generator (`--evaluation`). A detector that scores
well on synth.py's edits but not on these has learnt synth.py's style rather than edits.
Photos: only the evaluation-only sources of tools/sample_photos.py (scikit-learn, matplotlib,
PyWavelets). This set is never used for training or calibration.

Photos are used whole at their native size (no cropping; a side over 1024 px is downscaled so
the long side is 1024), RGB uint8. Per photo, with one seeded numpy Generator, `--variants`
images of each method (no edit function of synth.py is reused):

- natural (Natural, mask all zeros): variant 0 the photo untouched; odd variants a JPEG round
  trip at quality 80-95; other even variants resized by 0.75-0.9 (bicubic). No further
  post-processing.
- copy_move (LocallyEdited): a rectangle or ellipse covering 3-12% of the image, copied from
  another place of the same image by pure translation (offset at least 30% of the short side,
  both places inside the image), pasted with a hard edge. Mask = the pasted target only.
- splice (LocallyEdited): an ellipse / rectangle / random polygon covering 5-20%, taken from
  ANOTHER evaluation photo at its native scale (window at a random place of the donor; a donor
  too small is reflect-padded), hard-pasted: no blending, no brightness matching.
- inpaint (LocallySynthesized): cv2.inpaint (radius 5, INPAINT_TELEA and INPAINT_NS
  alternating) over a region of 3-12%.
- noise (LocallyEdited): additive Gaussian noise, sigma 4-12, inside a region of 5-20%.

Every edited image is then JPEG round-tripped (quality 85-95) with probability 0.3. Images and
masks (0/255, 255 = edited, the image's size) are saved as PNG.

Output (the manifest format tools/safe/evaluate.py --data reads): OUT/images/<stem>.png,
OUT/masks/<stem>.png, OUT/manifest.jsonl with one JSON object per line:
{image, mask, label, method, source (photo), package, split: "test", donor, detail}.

    PYTHONPATH=shared:. python -m tools.safe.crosscheck_set --out .cache/safe/crosscheck
"""

import argparse
import logging
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
from PIL import Image

from tools.safe.synth import write_manifest
from tools.sample_photos import EVALUATION_ONLY_SOURCES, photo, photos_of

log = logging.getLogger(__name__)

METHODS = ("natural", "copy_move", "splice", "inpaint", "noise")
LABEL_OF_METHOD = {"natural": "Natural", "copy_move": "LocallyEdited", "splice": "LocallyEdited",
                   "inpaint": "LocallySynthesized", "noise": "LocallyEdited"}
AREA_OF_METHOD = {"copy_move": (0.03, 0.12), "splice": (0.05, 0.20), "inpaint": (0.03, 0.12),
                  "noise": (0.05, 0.20)}
SHAPES_OF_METHOD = {"copy_move": ("rectangle", "ellipse"),
                    "splice": ("ellipse", "rectangle", "polygon"),
                    "inpaint": ("ellipse", "rectangle", "polygon"),
                    "noise": ("ellipse", "rectangle", "polygon")}
MAX_SIDE = 1024
AREA_MARGIN = 0.002  # target areas are drawn this far inside the range (rasterization slack)

Shape = np.ndarray  # bool [bh, bw]: the region inside its bounding box


def load_photo(name: str) -> np.ndarray:
    """Whole photo `name` as RGB uint8 [H, W, 3]; downscaled (Lanczos) to long side MAX_SIDE
    only when a side is longer."""
    image = photo(name)
    if max(image.size) > MAX_SIDE:
        scale = MAX_SIDE / max(image.size)
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.Resampling.LANCZOS)
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def jpeg_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG encode / decode with OpenCV at `quality` -> RGB uint8, same size."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _polygon_unit(rng: np.random.Generator) -> np.ndarray:
    """Random star-shaped polygon (5-9 vertices) spanning exactly the unit box: [n, 2] (x, y)."""
    n = int(rng.integers(5, 10))
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    radii = rng.uniform(0.45, 1.0, n)
    pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    pts -= pts.min(axis=0)
    return pts / np.maximum(pts.max(axis=0), 1e-6)


def _fill_ratio(kind: str, unit: Optional[np.ndarray]) -> float:
    """Fraction of its bounding box a shape covers (shoelace formula for the polygon)."""
    if kind == "rectangle":
        return 1.0
    if kind == "ellipse":
        return float(np.pi / 4)
    assert unit is not None
    x, y = unit[:, 0], unit[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def _rasterize(kind: str, bh: int, bw: int, unit: Optional[np.ndarray]) -> Shape:
    """Bool [bh, bw] of a rectangle, an inscribed ellipse or the unit polygon scaled to the box."""
    if kind == "rectangle":
        return np.ones((bh, bw), bool)
    if kind == "ellipse":
        yy, xx = np.mgrid[0:bh, 0:bw].astype(np.float64)
        cy, cx = (bh - 1) / 2, (bw - 1) / 2
        return ((yy - cy) / (bh / 2)) ** 2 + ((xx - cx) / (bw / 2)) ** 2 <= 1.0
    assert unit is not None
    canvas = np.zeros((bh, bw), np.uint8)
    pts = np.round(unit * [bw - 1, bh - 1]).astype(np.int32)
    cv2.fillPoly(canvas, [pts], (255,))
    return canvas > 0


def random_shape(h: int, w: int, area_range: Tuple[float, float], kinds: Sequence[str],
                 rng: np.random.Generator) -> Tuple[Shape, str]:
    """A region of one of `kinds` covering about `area_range` of an h x w image, as a bool patch
    of its bounding box (which fits inside the image), and the kind drawn."""
    kind = str(rng.choice(list(kinds)))
    unit = _polygon_unit(rng) if kind == "polygon" else None
    area = rng.uniform(area_range[0] + AREA_MARGIN, area_range[1] - AREA_MARGIN) * h * w
    box = area / _fill_ratio(kind, unit)
    aspect = rng.uniform(0.5, 2.0)  # height / width of the bounding box
    bh = int(round(min(h - 2, np.sqrt(box * aspect))))
    bw = int(round(min(w - 2, box / bh)))
    return _rasterize(kind, bh, bw, unit), kind


def place(shape: Shape, h: int, w: int, top: int, left: int) -> np.ndarray:
    """Full-size bool mask [h, w] with `shape` at (top, left)."""
    mask = np.zeros((h, w), bool)
    mask[top:top + shape.shape[0], left:left + shape.shape[1]] = shape
    return mask


def random_position(shape: Shape, h: int, w: int,
                    rng: np.random.Generator) -> Tuple[int, int]:
    """Random (top, left) that keeps the shape's bounding box inside the image."""
    bh, bw = shape.shape
    return int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))


def copy_move(img: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, str]:
    """Translate a rectangle / ellipse of the image elsewhere (offset >= 30% of the short side),
    hard edge -> (image, target mask, detail)."""
    h, w = img.shape[:2]
    shape, kind = random_shape(h, w, AREA_OF_METHOD["copy_move"], SHAPES_OF_METHOD["copy_move"],
                               rng)
    bh, bw = shape.shape
    min_offset = 0.3 * min(h, w)
    for _ in range(500):
        (sy, sx), (ty, tx) = random_position(shape, h, w, rng), random_position(shape, h, w, rng)
        if np.hypot(ty - sy, tx - sx) >= min_offset:
            break
    else:  # opposite corners: the largest translation the box allows
        sy, sx, ty, tx = 0, 0, h - bh, w - bw
        if np.hypot(ty - sy, tx - sx) < min_offset:
            raise ValueError("copy-move region too large for the required offset")
    out = img.copy()
    target = out[ty:ty + bh, tx:tx + bw]
    target[shape] = img[sy:sy + bh, sx:sx + bw][shape]
    return out, place(shape, h, w, ty, tx), f"{kind} offset=({ty - sy},{tx - sx})"


def donor_window(donor: np.ndarray, bh: int, bw: int, rng: np.random.Generator) -> np.ndarray:
    """A bh x bw window of `donor` at its native scale, at a random place; the donor is
    reflect-padded first when it is smaller than the window."""
    dh, dw = donor.shape[:2]
    pad_h, pad_w = max(0, bh - dh), max(0, bw - dw)
    if pad_h or pad_w:
        donor = np.pad(donor, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    top, left = random_position(np.zeros((bh, bw), bool), donor.shape[0], donor.shape[1], rng)
    return donor[top:top + bh, left:left + bw]


def splice(img: np.ndarray, donor: np.ndarray,
           rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, str]:
    """Hard-paste a region of another photo (native scale, no blending) -> (image, mask,
    detail)."""
    h, w = img.shape[:2]
    shape, kind = random_shape(h, w, AREA_OF_METHOD["splice"], SHAPES_OF_METHOD["splice"], rng)
    top, left = random_position(shape, h, w, rng)
    window = donor_window(donor, shape.shape[0], shape.shape[1], rng)
    out = img.copy()
    out[top:top + shape.shape[0], left:left + shape.shape[1]][shape] = window[shape]
    return out, place(shape, h, w, top, left), kind


def inpaint(img: np.ndarray, flag: int,
            rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, str]:
    """OpenCV inpainting (radius 5, `flag` = INPAINT_TELEA or INPAINT_NS) over a region ->
    (image, mask, detail)."""
    h, w = img.shape[:2]
    shape, kind = random_shape(h, w, AREA_OF_METHOD["inpaint"], SHAPES_OF_METHOD["inpaint"], rng)
    mask = place(shape, h, w, *random_position(shape, h, w, rng))
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    filled = cv2.inpaint(bgr, mask.astype(np.uint8) * 255, 5, flag)
    name = "telea" if flag == cv2.INPAINT_TELEA else "ns"
    return cv2.cvtColor(filled, cv2.COLOR_BGR2RGB), mask, f"{kind} {name}"


def noise(img: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, str]:
    """Additive Gaussian noise (sigma 4-12) inside a region -> (image, mask, detail)."""
    h, w = img.shape[:2]
    shape, kind = random_shape(h, w, AREA_OF_METHOD["noise"], SHAPES_OF_METHOD["noise"], rng)
    mask = place(shape, h, w, *random_position(shape, h, w, rng))
    sigma = float(rng.uniform(4, 12))
    out = img.astype(np.float64)
    out[mask] += rng.normal(0, sigma, (int(mask.sum()), 3))
    return np.clip(np.round(out), 0, 255).astype(np.uint8), mask, f"{kind} sigma={sigma:.1f}"


def natural(img: np.ndarray, variant: int, rng: np.random.Generator) -> Tuple[np.ndarray, str]:
    """Variant 0 untouched, odd variants JPEG (quality 80-95), other even variants resized
    0.75-0.9 bicubic -> (image, detail)."""
    if variant == 0:
        return img, "untouched"
    if variant % 2 == 1:
        quality = int(rng.integers(80, 96))
        return jpeg_round_trip(img, quality), f"jpeg q={quality}"
    factor = float(rng.uniform(0.75, 0.9))
    h, w = img.shape[:2]
    size = (round(w * factor), round(h * factor))
    resized = Image.fromarray(img).resize(size, Image.Resampling.BICUBIC)
    return np.asarray(resized), f"resize x{factor:.3f}"


def maybe_jpeg(img: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, str]:
    """JPEG round trip at quality 85-95 with probability 0.3 -> (image, detail suffix)."""
    if rng.random() < 0.3:
        quality = int(rng.integers(85, 96))
        return jpeg_round_trip(img, quality), f" +jpeg q={quality}"
    return img, ""


def save(out: Path, stem: str, img: np.ndarray, mask: np.ndarray) -> Tuple[str, str]:
    """Write images/<stem>.png and masks/<stem>.png (0/255) under `out`; their relative paths."""
    if mask.shape != img.shape[:2]:
        raise ValueError(f"{stem}: mask {mask.shape} does not match image {img.shape[:2]}")
    Image.fromarray(img).save(out / "images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{stem}.png")
    return f"images/{stem}.png", f"masks/{stem}.png"


def make_variant(method: str, img: np.ndarray, variant: int, donor: Optional[np.ndarray],
                 inpaint_flag: int,
                 rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray, str]:
    """One image of `method` from `img` -> (image, bool mask, detail)."""
    if method == "natural":
        out, detail = natural(img, variant, rng)
        return out, np.zeros(out.shape[:2], bool), detail
    if method == "copy_move":
        out, mask, detail = copy_move(img, rng)
    elif method == "splice":
        assert donor is not None
        out, mask, detail = splice(img, donor, rng)
    elif method == "inpaint":
        out, mask, detail = inpaint(img, inpaint_flag, rng)
    elif method == "noise":
        out, mask, detail = noise(img, rng)
    else:
        raise ValueError(f"unknown method {method!r}")
    out, suffix = maybe_jpeg(out, rng)
    return out, mask, detail + suffix


VALIDATION_SOURCES = ("mahotas", "glymur")


def make_set(out: Path, seed: int = 202, variants: int = 3,
             sources: Tuple[str, ...] = EVALUATION_ONLY_SOURCES) -> List[Dict[str, object]]:
    """Write the cross-check set under `out` (images, masks, manifest.jsonl); return the rows.
    `sources`: the evaluation-only sources (default), or VALIDATION_SOURCES for a set in this
    style that model choice may look at (split "val")."""
    rng = np.random.default_rng(seed)
    chosen = photos_of(sources)
    split = "test" if sources == EVALUATION_ONLY_SOURCES else "val"
    loaded = {name: load_photo(name) for _, name in chosen}
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    flags = (cv2.INPAINT_TELEA, cv2.INPAINT_NS)
    rows: List[Dict[str, object]] = []
    inpaints = 0
    for package, name in chosen:
        img = loaded[name]
        others = [n for n in loaded if n != name]
        for method in METHODS:
            for v in range(variants):
                donor = str(rng.choice(others)) if method == "splice" else None
                edited, mask, detail = make_variant(
                    method, img, v, loaded[donor] if donor else None,
                    flags[inpaints % 2], rng)
                inpaints += method == "inpaint"
                image_path, mask_path = save(out, f"{name}_{method}_{v}", edited, mask)
                rows.append({"image": image_path, "mask": mask_path,
                             "label": LABEL_OF_METHOD[method], "method": method, "source": name,
                             "package": package, "split": split, "donor": donor,
                             "detail": detail})
    write_manifest(out, rows, len(chosen))
    return rows


def main() -> None:
    """CLI: write the set and print the number of images per method."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=202)
    parser.add_argument("--variants", type=int, default=3, help="images per method and photo")
    parser.add_argument("--validation", action="store_true",
                        help="photos of the validation sources (mahotas, glymur) instead of the "
                             "evaluation-only ones: a set model choice may look at")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = make_set(args.out, seed=args.seed, variants=args.variants,
                    sources=VALIDATION_SOURCES if args.validation else EVALUATION_ONLY_SOURCES)
    counts = Counter(str(row["method"]) for row in rows)
    print(f"{len(rows)} images in {args.out}: "
          + ", ".join(f"{m}={counts[m]}" for m in METHODS))


if __name__ == "__main__":
    main()
