"""Make a labelled, masked set of manipulated images from real photos (scikit-image samples).

What the classes stand for here (honest: these are stand-ins for real generators and editors):
- Natural: an untouched crop of the photo.
- FullySynthesized: the whole crop "re-synthesized": downscaled 2-3x, upscaled back (generator-
  like upsampling) with correlated low-resolution noise added. Mask = all ones.
- LocallyEdited: one region (ellipse / rectangle / polygon, 8-30% of the image) replaced by
  a splice from ANOTHER photo of the same split (resampled 0.5-0.75x or 1.4-2x, sometimes
  JPEG-compressed), or locally blurred (Gaussian, sigma 1.5-3), or given extra noise (sigma 5-12).
- LocallySynthesized: one region replaced by inpainting-like content: diffused fill from its
  surroundings plus upsampled correlated noise texture.

Output: OUT/images/*.png, OUT/masks/*.png (0/255, edited = 255), OUT/manifest.jsonl with
{image, mask|null, label, source, split, method, donor}. Splits are assigned per source photo
(tools/safe/splits.py); splice donors come from the same split, so no photo leaks.

    python -m tools.safe.synth --out .cache/safe/synth [--photos astronaut,coffee,...]
"""

import argparse
import io
import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from tools.safe.splits import assign_splits

log = logging.getLogger(__name__)

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "moon",
          "immunohistochemistry", "hubble_deep_field", "retina", "brick", "grass", "gravel",
          "clock", "cell")
LOCAL_EDITS = ("splice", "blur", "noise")


def load_photo(name: str, short_side: int = 400) -> np.ndarray:
    """scikit-image sample `name` as RGB uint8 [H, W, 3], downscaled to short side <= short_side."""
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    scale = short_side / min(image.size)
    if scale < 1:
        image = image.resize((round(image.width * scale), round(image.height * scale)),
                             Image.LANCZOS)
    return np.asarray(image)


def random_crop(photo: np.ndarray, rng: np.random.Generator,
                size_range: Tuple[int, int]) -> np.ndarray:
    """Random crop with width and height drawn from size_range (clipped to the photo)."""
    h, w = photo.shape[:2]
    cw = min(w, int(rng.integers(size_range[0], size_range[1] + 1)))
    ch = min(h, int(rng.integers(size_range[0], size_range[1] + 1)))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return photo[top:top + ch, left:left + cw].copy()


def random_region(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Bool mask [h, w] of one ellipse / rectangle / polygon covering ~8-30% of the image."""
    area = rng.uniform(0.08, 0.30) * h * w
    aspect = rng.uniform(0.6, 1.6)
    rh, rw = min(h - 2, np.sqrt(area * aspect)), min(w - 2, np.sqrt(area / aspect))
    top, left = rng.uniform(0, h - rh), rng.uniform(0, w - rw)
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    box = (left, top, left + rw, top + rh)
    shape = rng.integers(0, 3)
    if shape == 0:
        draw.ellipse(box, fill=255)
    elif shape == 1:
        draw.rectangle(box, fill=255)
    else:
        angles = np.sort(rng.uniform(0, 2 * np.pi, 7))
        cy, cx = top + rh / 2, left + rw / 2
        points = [(cx + rw / 2 * np.cos(a) * rng.uniform(0.7, 1), cy + rh / 2 * np.sin(a)
                   * rng.uniform(0.7, 1)) for a in angles]
        draw.polygon(points, fill=255)
    return np.asarray(canvas) > 0


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur per channel, float [H, W, 3]."""
    return ndimage.gaussian_filter(img.astype(np.float32), sigma=(sigma, sigma, 0))


def _correlated_noise(h: int, w: int, sigma: float, factor: int,
                      rng: np.random.Generator) -> np.ndarray:
    """Noise drawn at 1/factor resolution and upsampled bicubically: [h, w, 3] float."""
    small = rng.normal(0, sigma, (max(2, h // factor), max(2, w // factor), 3)).astype(np.float32)
    chans = [np.asarray(Image.fromarray(small[..., c], mode="F").resize((w, h), Image.BICUBIC))
             for c in range(3)]
    return np.stack(chans, axis=-1)


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """JPEG round trip at `quality`."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def full_resynthesis(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Whole image: down 2-3x, up bicubic, + correlated noise -> uint8 [H, W, 3]."""
    h, w = img.shape[:2]
    factor = rng.uniform(2.0, 3.0)
    small = Image.fromarray(img).resize((max(8, round(w / factor)), max(8, round(h / factor))),
                                        Image.BICUBIC)
    up = np.asarray(small.resize((w, h), Image.BICUBIC)).astype(np.float32)
    up += _correlated_noise(h, w, rng.uniform(2.0, 4.0), 2, rng)
    return np.clip(up, 0, 255).astype(np.uint8)


def local_edit(img: np.ndarray, mask: np.ndarray, method: str, rng: np.random.Generator,
               donor: Optional[np.ndarray] = None) -> np.ndarray:
    """Apply a LocallyEdited manipulation inside `mask` -> uint8 [H, W, 3].

    Raises ValueError for an unknown method or a splice without donor.
    """
    h, w = img.shape[:2]
    out = img.astype(np.float32)
    if method == "blur":
        fill = _blur(img, rng.uniform(1.5, 3.0))
    elif method == "noise":
        fill = out + rng.normal(0, rng.uniform(5, 12), out.shape)
    elif method == "splice":
        if donor is None:
            raise ValueError("splice needs a donor photo")
        factor = rng.choice([rng.uniform(0.5, 0.75), rng.uniform(1.4, 2.0)])
        dh, dw = donor.shape[:2]
        scaled = Image.fromarray(donor).resize((max(w, round(dw * factor)),
                                                max(h, round(dh * factor))), Image.BICUBIC)
        source = np.asarray(scaled)
        if rng.random() < 0.5:
            source = _jpeg(source, int(rng.integers(60, 86)))
        top = int(rng.integers(0, source.shape[0] - h + 1))
        left = int(rng.integers(0, source.shape[1] - w + 1))
        fill = source[top:top + h, left:left + w].astype(np.float32)
    else:
        raise ValueError(f"unknown local edit {method!r}")
    out[mask] = fill[mask]
    return np.clip(out, 0, 255).astype(np.uint8)


def local_resynthesis(img: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Inpainting-like LocallySynthesized region: diffused fill + correlated texture."""
    h, w = img.shape[:2]
    keep = (~mask).astype(np.float32)[..., None]
    sigma = rng.uniform(6, 12)
    fill = _blur(img * keep, sigma) / np.maximum(_blur(np.repeat(keep, 3, -1), sigma), 1e-3)
    fill += _correlated_noise(h, w, rng.uniform(4, 8), int(rng.integers(3, 5)), rng)
    out = img.astype(np.float32)
    out[mask] = fill[mask]
    return np.clip(out, 0, 255).astype(np.uint8)


def make_dataset(out: Path, *, photos: Tuple[str, ...] = PHOTOS, crops: int = 4,
                 size_range: Tuple[int, int] = (256, 352), seed: int = 0,
                 val_fraction: float = 0.2, test_fraction: float = 0.2) -> List[Dict]:
    """Write images, masks and manifest.jsonl under `out`; return the manifest rows.

    Per crop: 1 Natural, 1 FullySynthesized, 2 LocallyEdited (methods drawn from LOCAL_EDITS),
    1 LocallySynthesized.
    """
    rng = np.random.default_rng(seed)
    splits = assign_splits(photos, seed=seed, val_fraction=val_fraction,
                           test_fraction=test_fraction)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    loaded = {name: load_photo(name) for name in photos}
    rows: List[Dict] = []

    def save(img: np.ndarray, mask: Optional[np.ndarray], stem: str, **meta: object) -> None:
        Image.fromarray(img).save(out / "images" / f"{stem}.png")
        mask_path = None
        if mask is not None:
            Image.fromarray(mask.astype(np.uint8) * 255).save(out / "masks" / f"{stem}.png")
            mask_path = f"masks/{stem}.png"
        rows.append({"image": f"images/{stem}.png", "mask": mask_path, **meta})

    for name in photos:
        split = splits[name]
        donors = [p for p in photos if p != name and splits[p] == split] or \
                 [p for p in photos if p != name]
        for c in range(crops):
            img = random_crop(loaded[name], rng, size_range)
            h, w = img.shape[:2]
            base = dict(source=name, split=split)
            stem = f"{name}_{c}"
            save(img, np.zeros((h, w), bool), f"{stem}_natural", label="Natural",
                 method="none", donor=None, **base)
            save(full_resynthesis(img, rng), np.ones((h, w), bool), f"{stem}_full",
                 label="FullySynthesized", method="resynthesis", donor=None, **base)
            for k, method in enumerate(rng.choice(LOCAL_EDITS, size=2, replace=False)):
                donor = str(rng.choice(donors)) if method == "splice" else None
                mask = random_region(h, w, rng)
                edited = local_edit(img, mask, str(method), rng,
                                    loaded[donor] if donor else None)
                save(edited, mask, f"{stem}_edit{k}_{method}", label="LocallyEdited",
                     method=str(method), donor=donor, **base)
            mask = random_region(h, w, rng)
            save(local_resynthesis(img, mask, rng), mask, f"{stem}_inpaint",
                 label="LocallySynthesized", method="inpaint", donor=None, **base)
    with open(out / "manifest.jsonl", "w") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    log.info("wrote %d images from %d photos to %s", len(rows), len(photos), out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--photos", default=",".join(PHOTOS),
                        help="comma-separated scikit-image sample names")
    parser.add_argument("--crops", type=int, default=4, help="crops per photo")
    parser.add_argument("--min-size", type=int, default=256)
    parser.add_argument("--max-size", type=int, default=352)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rows = make_dataset(args.out, photos=tuple(args.photos.split(",")), crops=args.crops,
                        size_range=(args.min_size, args.max_size), seed=args.seed,
                        val_fraction=args.val_fraction, test_fraction=args.test_fraction)
    counts: Dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    print(f"{len(rows)} images in {args.out}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


if __name__ == "__main__":
    main()
