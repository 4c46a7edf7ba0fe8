"""Run a SAFE test dataset against any endpoint (local Truss server, Docker image or Baseten).

In the spirit of the challenge's example `scripts/test_datasets.py`: three categories of cases,
generated on the fly (offline, from scikit-image photos and synthetic patterns):
- standard:    photos and patterns at 224..384 px, square and not, JPEG and PNG -> 200;
- edge_case:   32x32 (200), 1x1 (400), 2048x2048 (200), 1000x50 extreme aspect (400),
               grey / RGBA PNG (200), corrupted / truncated bytes, wrong or lying mediaType, bad
               base64, malformed bodies (400);
- performance: N sequential requests, then a burst of concurrent ones.
A case succeeds when the status is the expected one AND a 200 body honours the contract (4
finite normalized logprobs, 0/1 PNG mask of exactly the input's size, all-zero mask when the
argmax is Natural) or a 400 body carries {"error": {"code": ...}}.

    python -m tools.safe.dataset_runner --url http://127.0.0.1:8103/v1/models/model:predict --quick
    python -m tools.safe.dataset_runner --api-key $BASETEN_API_KEY \
        --url https://model-<id>.api.baseten.co/environments/production/predict
"""

import argparse
import base64
import dataclasses
import io
import json
import logging
import math
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import requests
from PIL import Image, ImageDraw

from tools.sample_photos import photo

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class Case:
    """One request and what it must produce."""

    name: str
    category: str
    body: Any                      # JSON-able body, or bytes sent raw
    expected_status: int
    size: Optional[Tuple[int, int]] = None  # (W, H) of the image for the mask check


@dataclasses.dataclass
class Outcome:
    """What happened to one case."""

    name: str
    category: str
    status: int
    expected_status: int
    ok: bool
    latency_s: float
    problem: str = ""


# ----------------------------------------------------------------------------- images

def pattern(size: Tuple[int, int], seed: int) -> Image.Image:
    """Gradient + random shapes + mild noise, RGB (W, H)."""
    rng = np.random.default_rng(seed)
    w, h = size
    x = np.linspace(0, 1, w)[None, :, None]
    y = np.linspace(0, 1, h)[:, None, None]
    base = 255 * (x * rng.random(3) + y * rng.random(3)) / 2  # [h, w, 3] by broadcasting
    image = Image.fromarray(np.clip(base + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        box = (x0, y0, x0 + rng.integers(10, w // 2 + 11), y0 + rng.integers(10, h // 2 + 11))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    return image


def encode(image: Image.Image, fmt: str) -> bytes:
    """PIL image -> encoded bytes (JPEG quality 90)."""
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def body_for(data: bytes, media_type: str) -> Dict[str, Any]:
    """SAFE request body."""
    return {"image": {"mediaType": media_type, "data": base64.b64encode(data).decode()}}


def image_case(name: str, category: str, image: Image.Image, fmt: str,
               expected: int = 200) -> Case:
    """A case sending `image` encoded as `fmt` with the matching mediaType."""
    media = "image/jpeg" if fmt == "JPEG" else "image/png"
    return Case(name, category, body_for(encode(image, fmt), media), expected, image.size)


# ----------------------------------------------------------------------------- datasets

def standard_cases(quick: bool) -> List[Case]:
    """Photos and patterns at common sizes, JPEG and PNG."""
    sizes = [(224, 224), (256, 256), (299, 299), (384, 384), (384, 256), (240, 320)]
    photos = ["astronaut", "coffee", "chelsea", "rocket"]
    cases = []
    for i, size in enumerate(sizes[:3] if quick else sizes):
        for fmt in ("JPEG", "PNG"):
            source = photo(photos[i % len(photos)], size) if (i + len(fmt)) % 2 else \
                pattern(size, i)
            cases.append(image_case(f"{size[0]}x{size[1]} {fmt}", "standard", source, fmt))
    return cases


def edge_cases(quick: bool) -> List[Case]:
    """Tiny, huge, elongated, unusual modes, broken bytes and malformed bodies."""
    png = encode(photo("coffee", (256, 192)), "PNG")
    jpeg = encode(photo("coffee", (256, 192)), "JPEG")
    cases = [
        image_case("tiny 32x32 PNG", "edge_case", photo("astronaut", (32, 32)), "PNG"),
        image_case("1x1 PNG", "edge_case", Image.new("RGB", (1, 1), (9, 9, 9)), "PNG", 400),
        image_case("extreme aspect 1000x50 JPEG", "edge_case", pattern((1000, 50), 1), "JPEG",
                   400),
        image_case("elongated 600x60 JPEG", "edge_case", pattern((600, 60), 2), "JPEG"),
        image_case("grey PNG", "edge_case", photo("camera", (200, 150)).convert("L"), "PNG"),
        image_case("RGBA PNG", "edge_case", photo("chelsea", (180, 120)).convert("RGBA"), "PNG"),
        Case("corrupted bytes", "edge_case", body_for(b"\x89PNG\r\n\x1a\nnot really", "image/png"),
             400),
        Case("truncated PNG", "edge_case", body_for(png[: len(png) // 2], "image/png"), 400),
        Case("truncated JPEG", "edge_case", body_for(jpeg[: len(jpeg) // 2], "image/jpeg"), 400),
        Case("PNG declared as JPEG", "edge_case", body_for(png, "image/jpeg"), 400),
        Case("unsupported mediaType", "edge_case", body_for(png, "image/gif"), 400),
        Case("bad base64", "edge_case",
             {"image": {"mediaType": "image/png", "data": "not*base64!"}}, 400),
        Case("missing image", "edge_case", {"picture": {}}, 400),
        Case("missing data", "edge_case", {"image": {"mediaType": "image/png"}}, 400),
        Case("body is a list", "edge_case", [1, 2, 3], 400),
        Case("body is not JSON", "edge_case", b"{not json", 400),
    ]
    if not quick:
        cases.append(image_case("huge 2048x2048 JPEG", "edge_case",
                                photo("astronaut", (2048, 2048)), "JPEG"))
        cases.append(image_case("non-square 1500x1000 PNG", "edge_case",
                                photo("rocket", (1500, 1000)), "PNG"))
    else:
        cases.append(image_case("large 1024x1024 JPEG", "edge_case",
                                photo("astronaut", (1024, 1024)), "JPEG"))
    return cases


def performance_cases(quick: bool) -> Tuple[List[Case], List[Case]]:
    """(sequential, concurrent) copies of a 256x256 JPEG request."""
    image = photo("chelsea", (256, 256))
    n_seq, n_conc = (5, 4) if quick else (25, 16)
    seq = [image_case(f"sequential {i}", "performance", image, "JPEG") for i in range(n_seq)]
    conc = [image_case(f"concurrent {i}", "performance", image, "JPEG") for i in range(n_conc)]
    return seq, conc


# ----------------------------------------------------------------------------- checking

def check_contract(body: Any, size: Optional[Tuple[int, int]]) -> str:
    """'' when a 200 body honours the SAFE contract, else what is wrong."""
    if not isinstance(body, dict) or set(body) < {"logprobs", "localizationMask"}:
        return "missing logprobs/localizationMask"
    lp = body["logprobs"]
    if not isinstance(lp, list) or len(lp) != 4 or not all(
            isinstance(v, (int, float)) and math.isfinite(v) for v in lp):
        return "logprobs must be 4 finite numbers"
    total = math.log(sum(math.exp(v) for v in lp))
    if abs(total) > 1e-4:
        return f"logprobs not normalized (logsumexp {total:.2e})"
    mask = body["localizationMask"]
    if not isinstance(mask, dict) or mask.get("mediaType") != "image/png":
        return "localizationMask.mediaType must be image/png"
    try:
        image = Image.open(io.BytesIO(base64.b64decode(mask["data"], validate=True)))
        if image.format != "PNG":
            return "mask is not a PNG"
        values = np.asarray(image.convert("L"))
    except Exception as exc:  # noqa: BLE001 - any decode failure is a contract failure
        return f"mask does not decode ({type(exc).__name__})"
    if size is not None and image.size != tuple(size):
        return f"mask is {image.size}, image is {tuple(size)}"
    if image.mode not in ("1", "L", "P") or not set(np.unique(values)) <= {0, 1, 255}:
        return "mask is not binary"
    if int(np.argmax(lp)) == 0 and values.any():
        return "argmax is Natural but the mask is not empty"
    return ""


def send(session: requests.Session, url: str, case: Case, headers: Dict[str, str],
         timeout: float) -> Outcome:
    """POST one case and judge it."""
    started = time.perf_counter()
    try:
        if isinstance(case.body, bytes):
            response = session.post(url, data=case.body, timeout=timeout,
                                    headers={**headers, "Content-Type": "application/json"})
        else:
            response = session.post(url, json=case.body, timeout=timeout, headers=headers)
        status = response.status_code
    except requests.RequestException as exc:
        return Outcome(case.name, case.category, -1, case.expected_status, False,
                       time.perf_counter() - started, f"request failed: {type(exc).__name__}")
    latency = time.perf_counter() - started
    problem = "" if status == case.expected_status else f"HTTP {status}"
    if not problem:
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if status == 200:
            problem = check_contract(payload, case.size)
        elif not (isinstance(payload, dict) and payload.get("error")):
            problem = "error response without an error body"
    return Outcome(case.name, case.category, status, case.expected_status, not problem, latency,
                   problem)


def percentile(values: List[float], q: float) -> float:
    """q-th percentile (linear interpolation); nan for no values."""
    return float(np.percentile(values, q)) if values else float("nan")


def run(url: str, *, api_key: Optional[str] = None, quick: bool = False, concurrency: int = 4,
        timeout: float = 300.0, out: Optional[Path] = None) -> Dict[str, Any]:
    """Run every category against `url`; return (and write to `out`) the summary + outcomes."""
    headers = {"Authorization": f"Api-Key {api_key}"} if api_key else {}
    session = requests.Session()
    started = time.perf_counter()
    outcomes: List[Outcome] = []
    for case in standard_cases(quick) + edge_cases(quick):
        outcomes.append(send(session, url, case, headers, timeout))
    seq, conc = performance_cases(quick)
    seq_start = time.perf_counter()
    seq_out = [send(session, url, case, headers, timeout) for case in seq]
    seq_wall = time.perf_counter() - seq_start
    conc_start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        conc_out = list(pool.map(lambda c: send(requests.Session(), url, c, headers, timeout),
                                 conc))
    conc_wall = time.perf_counter() - conc_start
    outcomes += seq_out + conc_out
    latencies = [o.latency_s for o in outcomes if o.status == 200]
    by_category = {}
    for category in ("standard", "edge_case", "performance"):
        subset = [o for o in outcomes if o.category == category]
        by_category[category] = {"cases": len(subset),
                                 "success_rate": sum(o.ok for o in subset) / max(1, len(subset))}
    summary = {
        "url": url,
        "quick": quick,
        "cases": len(outcomes),
        "succeeded": sum(o.ok for o in outcomes),
        "success_rate": sum(o.ok for o in outcomes) / len(outcomes),
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_mean_s": statistics.fmean(latencies) if latencies else float("nan"),
        "latency_max_s": max(latencies) if latencies else float("nan"),
        "sequential_requests_per_s": len(seq_out) / seq_wall,
        "concurrent_requests_per_s": len(conc_out) / conc_wall,
        "concurrency": concurrency,
        "categories": by_category,
        "duration_s": time.perf_counter() - started,
        "failures": [dataclasses.asdict(o) for o in outcomes if not o.ok],
    }
    result = {"summary": summary, "outcomes": [dataclasses.asdict(o) for o in outcomes]}
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def print_summary(summary: Dict[str, Any]) -> None:
    """CLI summary on stdout."""
    print("SAFE DATASET RUNNER SUMMARY")
    print("=" * 60)
    print(f"Endpoint: {summary['url']}  (quick={summary['quick']})")
    print(f"Cases: {summary['cases']}  succeeded: {summary['succeeded']}  "
          f"success rate: {100 * summary['success_rate']:.1f}%")
    for name, cat in summary["categories"].items():
        print(f"  {name}: {cat['cases']} cases, {100 * cat['success_rate']:.1f}% success")
    print(f"Latency (200s): p50 {1000 * summary['latency_p50_s']:.1f} ms, "
          f"p95 {1000 * summary['latency_p95_s']:.1f} ms, "
          f"max {1000 * summary['latency_max_s']:.1f} ms")
    print(f"Requests/s: sequential {summary['sequential_requests_per_s']:.2f}, "
          f"concurrent ({summary['concurrency']}) {summary['concurrent_requests_per_s']:.2f}")
    for failure in summary["failures"]:
        print(f"  FAILED {failure['category']}/{failure['name']}: {failure['problem']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="full predict URL")
    parser.add_argument("--api-key", help="Baseten API key (sent as 'Authorization: Api-Key ...')")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller cases")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--out", type=Path, help="results JSON (default bench/results/"
                        "safe_dataset_runner[_quick].json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = args.out or ROOT / "bench" / "results" / \
        f"safe_dataset_runner{'_quick' if args.quick else ''}.json"
    result = run(args.url, api_key=args.api_key, quick=args.quick,
                 concurrency=args.concurrency, timeout=args.timeout, out=out)
    print_summary(result["summary"])
    print(f"results: {out}")
    raise SystemExit(0 if result["summary"]["success_rate"] == 1.0 else 1)


if __name__ == "__main__":
    main()
