"""Fidelity and cost of reduced-scale JPEG decoding (issue 8), measured on real photos.

For scikit-image sample photos saved as camera-sized JPEGs (upscaled to the size, with mild
sensor-like noise so entropy decoding does a camera's work; quality 90, 4:2:0), compare what the
model sees, the 224x224 crop after `resize_and_crop`, between

    full     decode_rgb(reduced_decode=False)          -> resize_and_crop(224)
    reduced  JPEG draft at the scale chosen for margin M -> resize_and_crop(224)

for several margins M (decoded shorter side >= M x 224; M = REDUCED_DECODE_MARGIN is what
serving uses). Reports per margin: the DCT scale used, max and mean abs pixel difference of the
crop, cosine similarity of the normalised model input ((x/255 - 0.5) / 0.5, Midnight's), and
decode+resize time both ways (median of --repeats, one thread).

    PYTHONPATH=shared .venv/bin/python -m tools.decode_fidelity [--sizes 4000x3000 2000x1500]
        [--repeats 5] [--out bench/results/decode_fidelity.json]
"""

import argparse
import io
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
from PIL import Image, ImageOps

from tools.sample_photos import photo
from vfm_serving.embeddings.preprocess import resize_and_crop
from vfm_serving.inputs import images
from vfm_serving.settings import ServingSettings

log = logging.getLogger("decode_fidelity")
ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "immunohistochemistry")
MARGINS = (1.0, 1.5, 2.0, 4.0)
SIDE = 224
QUALITY = 90
NOISE_SIGMA = 3.0


def camera_jpeg(name: str, size: Tuple[int, int], seed: int) -> bytes:
    """A photo upscaled to `size` with Gaussian noise (sigma 3 levels), as a quality-90 JPEG."""
    rng = np.random.default_rng(seed)
    base = np.asarray(photo(name, size), dtype=np.float32)
    noisy = np.clip(base + rng.normal(0.0, NOISE_SIGMA, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=QUALITY)
    return buf.getvalue()


def full_input(data: bytes) -> np.ndarray:
    """The 224 crop from a full decode (what serving does with VFM_REDUCED_DECODE=0)."""
    image = images.decode_rgb(data, ServingSettings(reduced_decode=False), reduce_for=SIDE)
    return np.asarray(resize_and_crop(image, SIDE))


def reduced_input(data: bytes, margin: float) -> Tuple[np.ndarray, float]:
    """The 224 crop from a draft-mode decode at `margin`; and the reduction factor used."""
    settings = ServingSettings()
    image = images.open_image(data, settings)
    factor = images.draft_for(image, SIDE, margin)
    icc = image.info.get("icc_profile")
    image.load()
    rgb = images.to_rgb(ImageOps.exif_transpose(image), icc)
    return np.asarray(resize_and_crop(rgb, SIDE)), factor


def served_input(data: bytes) -> np.ndarray:
    """What serving computes with the shipped defaults (reduced decode on)."""
    image = images.decode_rgb(data, ServingSettings(), reduce_for=SIDE)
    return np.asarray(resize_and_crop(image, SIDE))


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def normalised(pixels: np.ndarray) -> np.ndarray:
    return ((pixels.astype(np.float64) / 255.0 - 0.5) / 0.5).ravel()


def compare(full: np.ndarray, other: np.ndarray) -> Dict[str, float]:
    diff = np.abs(full.astype(np.int64) - other.astype(np.int64))
    a, b = normalised(full), normalised(other)
    cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
    return {"max_abs": int(diff.max()), "mean_abs": float(diff.mean()), "cosine": cosine}


def measure(sizes: List[Tuple[int, int]], repeats: int) -> Dict[str, object]:
    rows: List[Dict[str, object]] = []
    for size in sizes:
        for index, name in enumerate(PHOTOS):
            data = camera_jpeg(name, size, seed=index)
            full = full_input(data)
            row: Dict[str, object] = {
                "photo": name, "size": list(size), "jpeg_bytes": len(data),
                "full_ms": median_ms(lambda d=data: full_input(d), repeats), "margins": {}}
            for margin in MARGINS:
                reduced, factor = reduced_input(data, margin)
                row["margins"][str(margin)] = {  # type: ignore[index]
                    "factor": factor, **compare(full, reduced),
                    "ms": median_ms(lambda d=data, m=margin: reduced_input(d, m), repeats)}
            served = served_input(data)
            check = row["margins"][str(images.REDUCED_DECODE_MARGIN)]  # type: ignore[index]
            assert np.array_equal(served, reduced_input(data, images.REDUCED_DECODE_MARGIN)[0])
            log.info("%s %dx%d: full %.1f ms, served (margin %g, 1/%g) %.1f ms, max %d, cos %.6f",
                     name, *size, row["full_ms"], images.REDUCED_DECODE_MARGIN, check["factor"],
                     check["ms"], check["max_abs"], check["cosine"])
            rows.append(row)
    return {"photos": list(PHOTOS), "sizes": [list(s) for s in sizes], "side": SIDE,
            "jpeg_quality": QUALITY, "noise_sigma": NOISE_SIGMA, "margins": list(MARGINS),
            "served_margin": images.REDUCED_DECODE_MARGIN, "repeats": repeats,
            "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
            "python": platform.python_version(), "pillow": Image.__version__,
            "rows": rows, "summary": summarise(rows, sizes)}


def summarise(rows: List[Dict[str, object]], sizes: List[Tuple[int, int]]
              ) -> List[Dict[str, object]]:
    """Per size and margin: worst max-abs, worst cosine, median times over the photos."""
    out = []
    for size in sizes:
        of_size = [r for r in rows if r["size"] == list(size)]
        full_ms = statistics.median(float(r["full_ms"]) for r in of_size)  # type: ignore[arg-type]
        for margin in MARGINS:
            cells = [r["margins"][str(margin)] for r in of_size]  # type: ignore[index]
            out.append({"size": list(size), "margin": margin,
                        "factor": statistics.median(c["factor"] for c in cells),
                        "max_abs_worst": max(c["max_abs"] for c in cells),
                        "mean_abs_worst": max(c["mean_abs"] for c in cells),
                        "cosine_worst": min(c["cosine"] for c in cells),
                        "full_ms": full_ms,
                        "reduced_ms": statistics.median(c["ms"] for c in cells)})
    return out


def table(result: Dict[str, object]) -> str:
    lines = ["| JPEG | margin | scale | max abs (worst) | mean abs (worst) | cosine (worst) "
             "| full decode+resize | reduced | speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for s in result["summary"]:  # type: ignore[attr-defined]
        served = " (served)" if s["margin"] == result["served_margin"] else ""
        lines.append(f"| {s['size'][0]}x{s['size'][1]} | {s['margin']:g}{served} "
                     f"| 1/{s['factor']:g} | {s['max_abs_worst']} | {s['mean_abs_worst']:.2f} "
                     f"| {s['cosine_worst']:.6f} | {s['full_ms']:.0f} ms | "
                     f"{s['reduced_ms']:.0f} ms | x{s['full_ms'] / s['reduced_ms']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["4000x3000", "2000x1500"],
                        help="JPEG sizes WxH")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/decode_fidelity.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes]
    result = measure(sizes, args.repeats)  # type: ignore[arg-type]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("wrote %s\n\n%s", args.out, table(result))


if __name__ == "__main__":
    main()
