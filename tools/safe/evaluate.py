"""Evaluate a SAFE server on an edited / natural image set: the figures a client would measure.

Sends every image of a synthetic set (tools.safe.synth manifest; by default the independent
evaluation set made from the photos of scikit-learn, matplotlib and PyWavelets, which no training
ever sees) to the server's predict route, scores the returned log-probabilities and mask against
the truth (tools/safe/metrics.py: overall, per edit method, per source package), and measures the
latency of 1024x768 JPEG requests.

    PYTHONPATH=shared python -m tools.safe.evaluate --serve --out bench/results/safe_evaluation.json
    PYTHONPATH=shared python -m tools.safe.evaluate --url http://127.0.0.1:8103/v1/models/model:predict
    PYTHONPATH=shared python -m tools.safe.evaluate --serve --crosscheck --out X.json   # 2nd set

`--serve` starts the real Truss server of safe_detector/ on 127.0.0.1 (tools.local_server) with
the shipped defaults; `--heads DIR` serves other heads (SAFE_HEADS_DIR).
"""

import argparse
import base64
import contextlib
import io
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import numpy as np
import requests
from PIL import Image

from tools.safe.crosscheck_set import make_set as make_crosscheck_set
from tools.safe.metrics import Served, served_metrics
from tools.safe.synth import EVALUATION_CROPS, make_evaluation_set
from tools.sample_photos import photo

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
LABELS = ("Natural", "FullySynthesized", "LocallyEdited", "LocallySynthesized")
LATENCY_PHOTOS = ("china", "flower", "grace_hopper")


def request_body(data: bytes, media_type: str) -> Dict[str, Any]:
    """The SAFE request for encoded image bytes."""
    return {"image": {"mediaType": media_type, "data": base64.b64encode(data).decode()}}


def call(session: requests.Session, url: str, data: bytes, media_type: str,
         timeout: float = 300) -> Dict[str, Any]:
    """POST one image; return the response body.

    Raises:
        requests.HTTPError: non-2xx answer.
    """
    response = session.post(url, json=request_body(data, media_type), timeout=timeout)
    response.raise_for_status()
    return response.json()


def decode_mask(body: Dict[str, Any]) -> np.ndarray:
    """The response's localizationMask PNG -> uint8 [H, W] in {0, 1}."""
    png = base64.b64decode(body["localizationMask"]["data"])
    return (np.asarray(Image.open(io.BytesIO(png)).convert("L")) > 0).astype(np.uint8)


def evaluate_set(url: str, data: Path, figure: Optional[Path] = None) -> Dict[str, Any]:
    """Score every image of the manifest in `data` through the server at `url`; optionally save
    a contact sheet (image | truth | served mask, first image of each edit method) to `figure`."""
    rows = [json.loads(line) for line in (data / "manifest.jsonl").read_text().splitlines()
            if line.strip()]
    records: List[Served] = []
    latencies: List[float] = []
    with requests.Session() as session:
        for row in rows:
            raw = (data / row["image"]).read_bytes()
            started = time.perf_counter()
            body = call(session, url, raw, "image/png")
            latencies.append(time.perf_counter() - started)
            label = LABELS.index(row["label"])
            truth = None
            if row.get("mask"):
                truth = np.asarray(Image.open(data / row["mask"]).convert("L")) > 0
            records.append(Served(label=label, truth=truth,
                                  logprobs=np.asarray(body["logprobs"], dtype=np.float64),
                                  mask=decode_mask(body), method=row.get("method", ""),
                                  package=row.get("package", "")))
    if figure is not None:
        contact_sheet(data, rows, records, figure)
    metrics = served_metrics(records)
    metrics["latency_p50_s"] = statistics.median(latencies)
    return metrics


def contact_sheet(data: Path, rows: List[Dict[str, Any]], records: List[Served], out: Path,
                  cell: int = 160) -> None:
    """PNG: one line per edit method (its first image): image | truth mask | served mask, with
    the predicted label written under the served mask."""
    from PIL import ImageDraw

    firsts: Dict[str, int] = {}
    for i, row in enumerate(rows):
        firsts.setdefault(row.get("method", ""), i)
    sheet = Image.new("RGB", (3 * cell, len(firsts) * (cell + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    for line, (method, i) in enumerate(sorted(firsts.items())):
        image = Image.open(data / rows[i]["image"]).convert("RGB")
        truth = records[i].truth if records[i].truth is not None else np.zeros(image.size[::-1])
        tiles = [image, Image.fromarray((truth > 0).astype(np.uint8) * 255),
                 Image.fromarray(records[i].mask.astype(np.uint8) * 255)]
        top = line * (cell + 14)
        for col, tile in enumerate(tiles):
            sheet.paste(tile.convert("RGB").resize((cell, cell)), (col * cell, top))
        label = LABELS[int(np.argmax(records[i].logprobs))]
        draw.text((2, top + cell), method, fill="black")
        draw.text((2 * cell + 2, top + cell), label, fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)


def latency_1024x768(url: str, reps: int) -> Dict[str, float]:
    """Median / mean seconds of `reps` sequential 1024x768 JPEG (quality 90) requests, after one
    warm-up request per photo."""
    bodies = []
    for name in LATENCY_PHOTOS:
        buf = io.BytesIO()
        photo(name, (1024, 768)).save(buf, format="JPEG", quality=90)
        bodies.append(buf.getvalue())
    times = []
    with requests.Session() as session:
        for raw in bodies:
            call(session, url, raw, "image/jpeg")
        for i in range(reps):
            started = time.perf_counter()
            call(session, url, bodies[i % len(bodies)], "image/jpeg")
            times.append(time.perf_counter() - started)
    return {"median_s": statistics.median(times), "mean_s": statistics.mean(times),
            "reps": reps}


@contextlib.contextmanager
def served(url: Optional[str], heads: Optional[Path]) -> Iterator[str]:
    """Yield a predict URL: `url` as given, or a real local Truss server of safe_detector/."""
    if url:
        yield url
        return
    from tools.local_server import free_port, serve

    env = {"SAFE_HEADS_DIR": str(heads.resolve())} if heads else {}
    with serve(ROOT / "safe_detector", free_port(), env) as server:
        yield server.predict_url


def markdown(metrics: Dict[str, Any]) -> str:
    """Per-package and per-method table of the served figures."""
    lines = ["| group | images | mean IoU (edited) | all-ones IoU | natural FP | "
             "natural-vs-edited bal. acc | detected as edited |", "|---|---|---|---|---|---|---|"]
    groups = [("all", metrics)] + [(f"source {k}", v) for k, v in metrics["by_package"].items()] \
        + [(f"edit {k}", v) for k, v in metrics["by_method"].items()]
    for name, m in groups:
        lines.append(f"| {name} | {m['images']} | {m['mean_iou']:.3f} | "
                     f"{m['all_ones_mean_iou']:.3f} | {m['natural_fp_pixel_rate']:.3f} | "
                     f"{m['natural_vs_edited_balanced_accuracy']:.3f} | "
                     f"{m['detected_as_edited']:.2f} |")
    return "\n".join(lines).replace("nan", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="predict URL of a running server (default: --serve)")
    parser.add_argument("--serve", action="store_true", help="start the real local Truss server")
    parser.add_argument("--heads", type=Path, help="heads folder to serve (SAFE_HEADS_DIR)")
    parser.add_argument("--data", type=Path,
                        help="manifest folder; made from the evaluation-only sources if absent "
                             "(default .cache/safe/evaluation, or .cache/safe/crosscheck)")
    parser.add_argument("--crosscheck", action="store_true",
                        help="the second evaluation set (tools.safe.crosscheck_set: whole photos, "
                             "differently styled edits) instead of tools.safe.synth's")
    parser.add_argument("--crops", type=int, default=EVALUATION_CROPS,
                        help="crops per photo when making --data")
    parser.add_argument("--latency-reps", type=int, default=15)
    parser.add_argument("--out", type=Path, help="JSON report")
    parser.add_argument("--figure", type=Path, help="contact sheet PNG (image | truth | mask)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not args.url and not args.serve:
        parser.error("give --url or --serve")
    data = args.data or Path(".cache/safe/crosscheck" if args.crosscheck
                             else ".cache/safe/evaluation")
    if not (data / "manifest.jsonl").is_file():
        if args.crosscheck:
            make_crosscheck_set(data)
        else:
            make_evaluation_set(data, crops=args.crops)
    with served(args.url, args.heads) as url:
        metrics = evaluate_set(url, data, args.figure)
        metrics["latency_1024x768"] = latency_1024x768(url, args.latency_reps)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(metrics, indent=2) + "\n")
    print(markdown(metrics))
    print(f"latency 1024x768 JPEG: median {metrics['latency_1024x768']['median_s']:.3f} s")


if __name__ == "__main__":
    main()
