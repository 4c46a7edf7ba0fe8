"""Soak a served Truss: N concurrent clients for T seconds, a mix of good and bad requests.

Each good request's answer is compared with the answer the same request got alone before the
soak (its reference): a different answer under load (another request's image, a dropped or
reordered item) is a mismatch. Each bad request must get its exact status and error code. The
server process tree's RSS is sampled throughout.

    PYTHONPATH=shared .venv/bin/python -m tools.soak midnight [--clients 8] [--seconds 60]
    PYTHONPATH=shared .venv/bin/python -m tools.soak derm --url http://127.0.0.1:8102 --pid 1234

Without --url the Truss is served locally (tools.local_server, the manifest's stand-in); with it,
the running server is used (give --pid for RSS figures). Writes bench/results/soak_<truss>.json:
requests, by status, 5xx count, mismatches (with the first few described), latency p50/p99, RSS
at start/end/peak and growth.
"""

import argparse
import base64
import dataclasses
import io
import json
import logging
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import msgpack
import numpy as np
import requests
from PIL import Image

from tools.sample_photos import photo

log = logging.getLogger("soak")
ROOT = Path(__file__).resolve().parents[1]
JSON = "application/json"
PREDICT = "/v1/models/model:predict"


@dataclasses.dataclass
class Probe:
    """One kind of request in the mix. Good probes (status 200) get a reference answer from
    `calibrate`; bad ones must answer `status` with error code `code`."""

    name: str
    body: bytes
    content_type: str = JSON
    status: int = 200
    code: Optional[str] = None
    reference: Any = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _image(name: str, size: tuple, fmt: str) -> bytes:
    buf = io.BytesIO()
    photo(name, size).save(buf, fmt)
    return buf.getvalue()


def workload(truss: str) -> List[Probe]:
    """The request mix for one truss: about half good (distinct images), half bad."""
    png = _image("astronaut", (256, 256), "PNG")
    jpeg = _image("coffee", (400, 300), "JPEG")
    jpeg2 = _image("chelsea", (300, 451), "JPEG")
    bad_json = [Probe("invalid json", b'{"a": ', status=400, code="invalid_json"),
                Probe("deep json", b"[" * 5000, status=400, code="json_too_deep"),
                Probe("not utf-8", b'{"a": "\xff"}', status=400, code="invalid_utf8"),
                Probe("text/html", b"<html/>", "text/html", 415, "unsupported_content_type")]
    if truss == "midnight":
        return [
            Probe("png", json.dumps({"image_base64": _b64(png)}).encode()),
            Probe("jpeg segmentation", json.dumps({"image_base64": _b64(jpeg),
                                                   "task": "segmentation"}).encode()),
            Probe("two images", json.dumps({"image_base64_list": [_b64(jpeg2), _b64(png)],
                                            "batch_size": 1}).encode()),
            Probe("msgpack bytes", msgpack.packb({"image_base64": jpeg2}), "application/msgpack"),
            Probe("bad base64", json.dumps({"image_base64": "@@@"}).encode(), status=400,
                  code="invalid_base64"),
            Probe("credentials url", json.dumps({"image_url": "http://u:p@example.com/a.png"}
                                                ).encode(), status=400,
                  code="url_credentials_not_allowed"),
            Probe("bad task", json.dumps({"image_base64": _b64(png), "task": "x"}).encode(),
                  status=400, code="unsupported_task"),
            *bad_json]
    if truss == "derm":
        return [
            Probe("png", json.dumps({"instances": [{"input_bytes": _b64(png)}]}).encode()),
            Probe("good + bad instance", json.dumps({"instances": [
                {"input_bytes": _b64(jpeg)}, {"input_bytes": "@@@"}, {}]}).encode()),
            Probe("msgpack bytes", msgpack.packb({"instances": [{"input_bytes": jpeg2}]}),
                  "application/octet-stream"),
            Probe("no instances", b'{"instances": []}', status=400, code="invalid_request"),
            Probe("bad gcs uri", json.dumps({"instances": [{"gcs_uri": "s3://x/y.png"}]}
                                            ).encode()),
            *bad_json]
    if truss == "safe_detector":
        def safe(data: bytes, media: str) -> bytes:
            return json.dumps({"image": {"mediaType": media, "data": _b64(data)}}).encode()
        return [
            Probe("png", safe(png, "image/png")),
            Probe("jpeg", safe(jpeg, "image/jpeg")),
            Probe("jpeg 2", safe(jpeg2, "image/jpeg")),
            Probe("png declared jpeg", safe(png, "image/jpeg"), status=400,
                  code="media_type_mismatch"),
            Probe("bad base64", json.dumps({"image": {"mediaType": "image/png",
                                                      "data": "%%%"}}).encode(),
                  status=400, code="invalid_base64"),
            *bad_json]
    raise ValueError(f"no soak workload for {truss!r}")


def summary(truss: str, body: Any) -> Any:
    """The numbers of a good answer that must not change under load."""
    if truss == "midnight":
        return np.asarray(body["embeddings"], dtype=np.float64)
    if truss == "derm":
        return [np.asarray(p["embedding"], np.float64) if "embedding" in p
                else p["error"]["code"] for p in body["predictions"]]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["localizationMask"]["data"]))))
    return (np.asarray(body["logprobs"], np.float64), mask)


def same(truss: str, reference: Any, got: Any) -> bool:
    """Equal up to float noise of a different batch composition; a different image is not."""
    def close(a: np.ndarray, b: np.ndarray) -> bool:
        return a.shape == b.shape and bool(np.allclose(a, b, rtol=1e-3, atol=1e-4))
    if truss == "midnight":
        return close(reference, got)
    if truss == "derm":
        return len(reference) == len(got) and all(
            close(r, g) if isinstance(r, np.ndarray) and isinstance(g, np.ndarray) else r == g
            for r, g in zip(reference, got, strict=True))
    (ref_lp, ref_mask), (lp, mask) = reference, got
    return (close(ref_lp, lp) and ref_mask.shape == mask.shape
            and float(np.mean(ref_mask != mask)) <= 0.01)


def send(url: str, probe: Probe, timeout: float = 120) -> requests.Response:
    return requests.post(url + PREDICT, data=probe.body,
                         headers={"Content-Type": probe.content_type}, timeout=timeout)


def calibrate(truss: str, url: str, probes: List[Probe]) -> None:
    """Send each probe alone; store good answers as references.

    Raises:
        RuntimeError: a probe does not answer as declared even alone (a workload bug).
    """
    for probe in probes:
        response = send(url, probe)
        if response.status_code != probe.status:
            raise RuntimeError(f"{probe.name}: HTTP {response.status_code} alone, expected "
                               f"{probe.status}: {response.text[:300]}")
        if probe.status == 200:
            probe.reference = summary(truss, response.json())
        elif response.json()["error"]["code"] != probe.code:
            raise RuntimeError(f"{probe.name}: code {response.json()['error']['code']}, "
                               f"expected {probe.code}")


def process_rss(pid: Optional[int]) -> Optional[int]:
    """Resident memory of `pid` and its children, in bytes (None without a pid)."""
    if pid is None:
        return None
    import psutil

    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return None


def run_soak(truss: str, url: str, probes: List[Probe], clients: int, seconds: float,
             pid: Optional[int] = None, timeout: float = 120) -> Dict[str, Any]:
    """`clients` threads send the probes round robin (each from its own offset) for `seconds`;
    a request without an answer after `timeout` seconds counts as a transport failure.

    Returns the figures (see the module docstring); every probe must have been calibrated.
    """
    lock = threading.Lock()
    latencies: List[float] = []
    statuses: Dict[str, int] = {}
    mismatches: List[str] = []
    failures: List[str] = []
    rss_samples: List[int] = []
    stop_at = time.monotonic() + seconds
    rss_start = process_rss(pid)

    def client(index: int) -> None:
        turn = index
        while time.monotonic() < stop_at:
            probe = probes[turn % len(probes)]
            turn += 1
            started = time.perf_counter()
            try:
                response = send(url, probe, timeout)
            except requests.RequestException as exc:
                with lock:
                    failures.append(f"{probe.name}: {type(exc).__name__}")
                continue
            elapsed = time.perf_counter() - started
            problem = _check(truss, probe, response)
            with lock:
                latencies.append(elapsed)
                statuses[str(response.status_code)] = statuses.get(
                    str(response.status_code), 0) + 1
                if problem:
                    mismatches.append(f"{probe.name}: {problem}")

    def sampler() -> None:
        while time.monotonic() < stop_at:
            rss = process_rss(pid)
            if rss is not None:
                rss_samples.append(rss)
            time.sleep(0.5)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    threads.append(threading.Thread(target=sampler))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    rss_end = process_rss(pid)
    ordered = sorted(latencies)
    mib = 1024 * 1024
    return {
        "truss": truss, "clients": clients, "seconds": seconds, "wall_s": round(wall, 2),
        "requests": len(latencies), "requests_per_s": round(len(latencies) / wall, 2),
        "by_status": dict(sorted(statuses.items())),
        "server_errors_5xx": sum(n for s, n in statuses.items() if s.startswith("5")),
        "mismatches": len(mismatches), "mismatch_examples": mismatches[:5],
        "transport_failures": len(failures), "transport_failure_examples": failures[:5],
        "latency_p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
        "latency_p99_ms": (round(1000 * ordered[min(len(ordered) - 1,
                                                    int(0.99 * len(ordered)))], 1)
                           if ordered else None),
        "rss_start_mib": round(rss_start / mib, 1) if rss_start else None,
        "rss_end_mib": round(rss_end / mib, 1) if rss_end else None,
        "rss_peak_mib": round(max(rss_samples) / mib, 1) if rss_samples else None,
        "rss_growth_mib": (round((rss_end - rss_start) / mib, 1)
                           if rss_start and rss_end else None),
        "probes": [p.name for p in probes],
    }


def _check(truss: str, probe: Probe, response: requests.Response) -> Optional[str]:
    """None if the response is what `probe` must get; else what is wrong."""
    if response.status_code != probe.status:
        return f"HTTP {response.status_code}, expected {probe.status}"
    try:
        body = response.json()
    except ValueError:
        return "response is not JSON"
    if probe.status != 200:
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        return None if code == probe.code else f"code {code}, expected {probe.code}"
    return None if same(truss, probe.reference, summary(truss, body)) else \
        "answer differs from its single-request reference"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("truss", choices=["midnight", "derm", "safe_detector"])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--url", help="a running server (default: serve the truss locally)")
    parser.add_argument("--pid", type=int, help="server process id, for RSS (with --url)")
    parser.add_argument("--out", type=Path, help="default bench/results/soak_<truss>.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    probes = workload(args.truss)
    out = args.out or ROOT / "bench" / "results" / f"soak_{args.truss}.json"

    def soak(url: str, pid: Optional[int]) -> Dict[str, Any]:
        calibrate(args.truss, url, probes)
        log.info("calibrated %d probes; soaking %s with %d clients for %gs", len(probes), url,
                 args.clients, args.seconds)
        return run_soak(args.truss, url, probes, args.clients, args.seconds, pid)

    if args.url:
        result = soak(args.url.rstrip("/"), args.pid)
    else:
        from tools.local_server import free_port, serve
        from tools.manifest import load_manifest, prepare_standin

        entry = load_manifest()["trusses"][args.truss]
        with serve(ROOT / entry["folder"], free_port(), prepare_standin(args.truss)) as server:
            result = soak(server.url, server.process.pid)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("wrote %s: %s", out, json.dumps({k: v for k, v in result.items()
                                              if k not in ("probes", "mismatch_examples")}))


if __name__ == "__main__":
    main()
