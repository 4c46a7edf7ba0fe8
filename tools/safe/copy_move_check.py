"""Measure a copy-move detector (`copy_move_maps`-style function) on synthetic SAFE manifests.

Per image and overall: the target IoU of (cm_match > 0.5 & cm_target >= 0.5) upscaled to the
image size against the manifest mask (which marks only the pasted target), the IoU of
cm_match > 0.5 alone against the mask, the share of copy-move images with any detection, the
false-positive pixel rate of cm_match > 0.5 on natural images and on the other edit methods
(none of which contain a copy-move), and the time per image; plus the time of the function on a
1024x768 photo.

    PYTHONPATH=shared:. python -m tools.safe.copy_move_check .cache/safe/synth/manifest.jsonl \
        --split train --every 2 [--impl module:function] [--per-image]

`--impl` names any function with the `copy_move_maps(rgb) -> float32 [2, h, w]` contract (e.g. a
copy of an older detector kept outside the package) so two detectors can be compared on the same
rows. Never point this at the held-out evaluation set (.cache/safe/evaluation).
"""

import argparse
import dataclasses
import functools
import importlib
import json
import logging
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
from PIL import Image

from tools.sample_photos import photo_array

LOG = logging.getLogger("copy_move_check")
DetectFn = Callable[[np.ndarray], np.ndarray]


def load_impl(spec: str, overrides: List[str]) -> DetectFn:
    """'module:function' -> the function, with `overrides` (["field=value"]) applied to the
    module's CopyMoveSettings. Raises ImportError / AttributeError if missing, TypeError for
    an unknown field."""
    module_name, _, name = spec.partition(":")
    module = importlib.import_module(module_name)
    fn: DetectFn = getattr(module, name or "copy_move_maps")
    if not overrides:
        return fn
    defaults = module.CopyMoveSettings()
    values = {}
    for item in overrides:
        key, _, text = item.partition("=")
        values[key] = type(getattr(defaults, key))(text)
    return functools.partial(fn, settings=dataclasses.replace(defaults, **values))


def upscale(values: np.ndarray, shape: tuple) -> np.ndarray:
    """float [h, w] -> float32 `shape` (H, W), bilinear (as forensic_maps resizes its maps)."""
    image = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(image.resize(shape[::-1], Image.Resampling.BILINEAR), dtype=np.float32)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two bool masks (0 when both are empty)."""
    union = float((a | b).sum())
    return float((a & b).sum()) / union if union else 0.0


def measure_row(fn: DetectFn, root: Path, row: Dict[str, str]) -> Dict[str, float]:
    """One manifest row -> its figures (seconds, match share, and IoUs for copy-moves)."""
    rgb = np.asarray(Image.open(root / row["image"]).convert("RGB"))
    start = time.perf_counter()
    maps = fn(rgb)
    seconds = time.perf_counter() - start
    match = upscale(maps[0], rgb.shape[:2]) > 0.5
    target = match & (upscale(maps[1], rgb.shape[:2]) >= 0.5)
    out = {"seconds": seconds, "match_share": float(match.mean())}
    if row["method"] == "copy_move":
        mask = np.asarray(Image.open(root / row["mask"]).convert("L")) > 127
        out.update(target_iou=iou(target, mask), match_iou=iou(match, mask),
                   detected=float(match.any()))
    return out


def photo_latency(fn: DetectFn, repeats: int) -> List[float]:
    """Seconds of `fn` on 'chelsea' resized to 1024x768, `repeats` times (after one warm-up)."""
    rgb = np.asarray(Image.fromarray(photo_array("chelsea")).resize((1024, 768),
                                                                    Image.Resampling.BILINEAR))
    fn(rgb)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(rgb)
        times.append(time.perf_counter() - start)
    return times


def summarise(rows: List[Dict[str, str]], results: List[Dict[str, float]]) -> Dict[str, float]:
    """Overall figures over the measured rows."""
    paired = list(zip(rows, results, strict=True))
    cm = [r for row, r in paired if row["method"] == "copy_move"]
    natural = [r["match_share"] for row, r in paired if row["method"] == "natural"]
    other = [r["match_share"] for row, r in paired if row["method"] not in ("natural", "copy_move")]
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"copy_moves": len(cm), "target_iou": mean([r["target_iou"] for r in cm]),
            "match_iou": mean([r["match_iou"] for r in cm]),
            "detected": mean([r["detected"] for r in cm]),
            "fp_natural": mean(natural), "naturals": len(natural),
            "fp_other_edits": mean(other), "other_edits": len(other),
            "seconds_per_image": mean([r["seconds"] for r in results])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifests", nargs="+", type=Path)
    parser.add_argument("--impl", default="vfm_serving.detection.copy_move:copy_move_maps")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a CopyMoveSettings field of the implementation")
    parser.add_argument("--split", default="train", help="manifest split ('' = all)")
    parser.add_argument("--methods", default="", help="comma list of methods ('' = all)")
    parser.add_argument("--every", type=int, default=1, help="keep every N-th matching row")
    parser.add_argument("--repeats", type=int, default=3, help="1024x768 latency repeats")
    parser.add_argument("--per-image", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    fn = load_impl(args.impl, args.set)
    methods = set(filter(None, args.methods.split(",")))
    summary: Dict[str, object] = {"impl": args.impl, "set": args.set}
    for manifest in args.manifests:
        if "evaluation" in manifest.parts:
            raise SystemExit("the evaluation set is held out: do not tune on it")
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
        rows = [r for r in rows if (not args.split or r["split"] == args.split)
                and (not methods or r["method"] in methods)][::args.every]
        results = []
        for row in rows:
            result = measure_row(fn, manifest.parent, row)
            results.append(result)
            if args.per_image:
                LOG.info("%-44s %-9s %s", row["image"], row["method"],
                         " ".join(f"{k}={v:.3f}" for k, v in result.items()))
        figures = summarise(rows, results)
        summary[str(manifest)] = figures
        LOG.info("%s: %s", manifest, " ".join(f"{k}={v:.4g}" for k, v in figures.items()))
    if args.repeats > 0:
        times = photo_latency(fn, args.repeats)
        summary["latency_1024x768"] = times
        LOG.info("1024x768: %s s (median %.3f)", " ".join(f"{t:.3f}" for t in times),
                 float(np.median(times)))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
