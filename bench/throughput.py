"""Benchmark (issue 8): Midnight end to end through the real Truss server vs the bare forward pass.

Serves Midnight's Truss with a ViT-S-size DINOv2 stand-in (hidden 384, 12 layers, 6 heads; random
weights, the real `Dinov2Model` class and loading path) on three local servers at once:

    default       the shipped config (dynamic batching on, reduced-scale JPEG decode on)
    no_batching   VFM_DYNAMIC_BATCHING=0 (a forward pass holds one request's images only)
    full_decode   VFM_REDUCED_DECODE=0 (every JPEG decoded at full size before the resize)

and loads the same checkpoint in this process for the bare forward pass (`forward_tokens` on
already-preprocessed tensors, same torch thread count as the servers, same micro-batches): the
physical limit of the machine. Every round runs every case once, in a shuffled order; each
end-to-end measurement is paired with a bare pass right before or after it (never at the same
moment), so machine noise hits both sides alike. Reported: medians and spread over rounds of the
ratio bare / end-to-end time (1.0 = no overhead at all), images/s, bytes on the wire.

Cases:
    classify_32          32 photo JPEGs 512x512 in one request, classification
    segment_8_<format>   8 of them, segmentation, in each output format (float JSON, base64
                         float32, base64 float16)
    large_8[_full]       8 camera JPEGs 4000x3000, classification (reduced decode on / off)
    concurrent_32        32 clients sending one image each at once, vs classify_32 on the same
                         server, with dynamic batching on (default) and off (no_batching); the
                         servers' /metrics give the mean forward batch size of each
Before the rounds, on the fresh servers: peak server RSS (process tree, every 20 ms) during a
32-photo request, 32 camera JPEGs, 256 different-size photos (base64) and 256 camera JPEGs (URLs
from a loopback file server: 256 x 3.3 MB would not fit the 100 MiB body cap as base64), on the
default and the full_decode server. Also a JSON-encoding micro-benchmark (bench/encoding.py) and
each CPU stage timed alone in-process (bench/costs.py): where the time goes.

Writes bench/results/throughput.json and bench/results/throughput.png.

    PYTHONPATH=shared .venv/bin/python -m bench.throughput [--rounds 12]    (or: make bench)
"""

import argparse
import base64
import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import http.server
import json
import logging
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import orjson
import psutil
import requests
import torch

from bench import costs, encoding, photos
from bench.probes import BatchCounter, RssSampler, forward_batches, scrape, stage_seconds
from tools.local_server import ROOT, LocalTruss, free_port, serve
from tools.standins.midnight import make
from vfm_serving.embeddings.dinov2 import (
    Backbone,
    forward_tokens,
    load_backbone,
    normalize_on_device,
)
from vfm_serving.embeddings.preprocess import resize_and_crop
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings

log = logging.getLogger("bench")
RESULTS = ROOT / "bench" / "results"
VIT_S = {"hidden_size": 384, "layers": 12, "heads": 6}
SERVERS = {
    "default": {},
    "no_batching": {"VFM_DYNAMIC_BATCHING": "0"},
    "full_decode": {"VFM_REDUCED_DECODE": "0"},
}
TARGETS = {  # case -> issue 8's "done when" bar for the ratio bare / end to end
    "classify_32": 0.90,
    "segment_8_base64_float16": 0.85,
    "large_8": 0.60,
}
CONCURRENCY_TARGET = 0.90  # 32 single-image clients vs one 32-image request, batching on
SEGMENT_FORMATS = {"float_float32": ("float", "float32"), "base64_float32": ("base64", "float32"),
                   "base64_float16": ("base64", "float16")}


@dataclasses.dataclass
class Case:
    """One measured request shape: what is sent where, and its bare-forward reference."""

    name: str
    server: str
    images: int
    bodies: List[bytes]  # one body: one request; several: that many concurrent clients
    reference: str  # key of the preprocessed tensors for the bare pass
    e2e_s: List[float] = dataclasses.field(default_factory=list)
    bare_s: List[float] = dataclasses.field(default_factory=list)
    response_bytes: int = 0
    batches: BatchCounter = dataclasses.field(default_factory=BatchCounter)
    stages: List[Dict[str, Tuple[float, float]]] = dataclasses.field(default_factory=list)
    client_decode_s: Optional[float] = None  # a client turning the response into numpy

    @property
    def concurrent(self) -> bool:
        return len(self.bodies) > 1


def body(images: Sequence[bytes], **fields: Any) -> bytes:
    """A Midnight request body: base64 images plus `fields`, JSON bytes."""
    return orjson.dumps({"image_base64_list": _b64(images), **fields})


def spread(values: Sequence[float]) -> Dict[str, float]:
    """median, quartiles, min, max of `values`."""
    q1, _, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else (values[0],) * 3
    return {"median": statistics.median(values), "p25": q1, "p75": q3, "min": min(values),
            "max": max(values), "n": len(values)}


# --- clients ------------------------------------------------------------------------------------


class Clients:
    """HTTP clients of the servers: one session for single requests, and a pool of `width`
    threads (each with its own keep-alive session) for bursts of concurrent requests."""

    def __init__(self, width: int) -> None:
        self.session = requests.Session()
        self.width = width
        self._pool = concurrent.futures.ThreadPoolExecutor(width, thread_name_prefix="client")
        self._local = threading.local()

    def close(self) -> None:
        self._pool.shutdown()
        self.session.close()

    def post(self, server: LocalTruss, data: bytes, session: Optional[requests.Session] = None
             ) -> requests.Response:
        """POST a JSON body; the response is fully read. Raises requests.HTTPError on non-200."""
        response = (session or self.session).post(
            server.predict_url, data=data, headers={"Content-Type": "application/json"},
            timeout=600)
        if response.status_code != 200:
            raise requests.HTTPError(f"{response.status_code}: {response.text[:500]}")
        return response

    def burst(self, server: LocalTruss, bodies: Sequence[bytes]) -> Tuple[float, int]:
        """Send every body at once from its own client thread; (wall seconds until the last
        response is in, bytes of the last response)."""
        if len(bodies) > self.width:
            raise ValueError("more concurrent clients than client threads")
        barrier = threading.Barrier(len(bodies) + 1)

        def one(data: bytes) -> int:
            session = getattr(self._local, "session", None)
            if session is None:
                session = self._local.session = requests.Session()
            barrier.wait()
            return len(self.post(server, data, session).content)

        futures = [self._pool.submit(one, b) for b in bodies]
        barrier.wait()
        started = time.perf_counter()
        sizes = [f.result() for f in futures]
        return time.perf_counter() - started, sizes[-1]

    def timed(self, server: LocalTruss, bodies: Sequence[bytes]) -> Tuple[float, int]:
        """(seconds, response bytes) of one request, or of a burst of concurrent ones."""
        if len(bodies) > 1:
            return self.burst(server, bodies)
        started = time.perf_counter()
        response = self.post(server, bodies[0])
        return time.perf_counter() - started, len(response.content)


# --- the bare forward pass ------------------------------------------------------------------------


def tiles(images: Sequence[bytes], backbone: Backbone, reduced: bool = True) -> torch.Tensor:
    """JPEGs -> normalized [N, 3, S, S] exactly as the server prepares them (decode_rgb with
    reduce_for, resize_and_crop, normalize_on_device)."""
    settings = ServingSettings(reduced_decode=reduced)
    size = backbone.layout.input_size
    pixels = [np.asarray(resize_and_crop(decode_rgb(i, settings, reduce_for=size), size))
              for i in images]
    return normalize_on_device(backbone, np.stack(pixels))


def bare_forward(backbone: Backbone, batch: torch.Tensor, micro_batch: int) -> float:
    """Seconds for the model alone over `batch`, in micro-batches of `micro_batch` (as served)."""
    started = time.perf_counter()
    for start in range(0, batch.shape[0], micro_batch):
        forward_tokens(backbone, batch[start:start + micro_batch])
    return time.perf_counter() - started


# --- loopback file server for URL inputs ---------------------------------------------------------


@contextlib.contextmanager
def file_server(files: Sequence[bytes]) -> Iterator[str]:
    """Serve `files` on 127.0.0.1 as /<index>.jpg (any query string); yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            index = int(self.path.split("?")[0].strip("/").split(".")[0])
            data = files[index]
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


# --- phases ---------------------------------------------------------------------------------------


def measure_memory(server: LocalTruss, clients: Clients, name: str, data: bytes
                   ) -> Dict[str, Any]:
    """Peak RSS of the server's process tree during one request (sampled every 20 ms)."""
    time.sleep(1.0)
    with RssSampler(server.process.pid) as sampler:
        seconds, _ = clients.timed(server, [data])
    log.info("memory %s: %.0f MiB peak (%.0f before), %.1fs", name, sampler.peak / 2**20,
             sampler.start / 2**20, seconds)
    return {"request_bytes": len(data), "seconds": seconds,
            "rss_before_mib": sampler.start / 2**20, "peak_rss_mib": sampler.peak / 2**20,
            "peak_minus_before_mib": (sampler.peak - sampler.start) / 2**20,
            "series_s_mib": [(round(t, 3), round(r / 2**20, 1)) for t, r in sampler.samples]}


def run_round(cases: Sequence[Case], servers: Dict[str, LocalTruss], clients: Clients,
              backbone: Backbone, references: Dict[str, torch.Tensor], micro_batch: int,
              rng: random.Random, bare_first: bool) -> None:
    """Every case once in a shuffled order, each next to its own bare pass."""
    order = list(cases)
    rng.shuffle(order)
    for case in order:
        server = servers[case.server]
        steps: List[Callable[[], None]] = [
            functools.partial(_bare_step, case, backbone, references, micro_batch),
            functools.partial(_e2e_step, case, server, clients),
        ]
        for step in (steps if bare_first else steps[::-1]):
            time.sleep(0.05)  # let the other side's threads go idle
            step()


def _bare_step(case: Case, backbone: Backbone, references: Dict[str, torch.Tensor],
               micro_batch: int) -> None:
    case.bare_s.append(bare_forward(backbone, references[case.reference], micro_batch))


def _e2e_step(case: Case, server: LocalTruss, clients: Clients) -> None:
    before = scrape(server.url)
    seconds, size = clients.timed(server, case.bodies)
    case.e2e_s.append(seconds)
    case.response_bytes = size
    after = scrape(server.url)
    case.batches.add(forward_batches(before), forward_batches(after))
    stages_before = stage_seconds(before)
    case.stages.append({stage: (count - stages_before.get(stage, (0.0, 0.0))[0],
                                total - stages_before.get(stage, (0.0, 0.0))[1])
                        for stage, (count, total) in stage_seconds(after).items()})


def client_decode_seconds(response_body: bytes, repeats: int = 5) -> float:
    """Median seconds for a client to turn a Midnight response into one float32 numpy array."""
    def decode() -> np.ndarray:
        payload = orjson.loads(response_body)
        shape = payload["embedding_shape"]
        if payload.get("encoding_format") == "base64":
            dtype = "<f2" if payload["embedding_dtype"] == "float16" else "<f4"
            return np.stack([np.frombuffer(base64.b64decode(s), dtype).reshape(shape[1:])
                             for s in payload["embeddings"]]).astype(np.float32)
        return np.asarray(payload["embeddings"], dtype=np.float32)

    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        decode()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


# --- main -----------------------------------------------------------------------------------------


def machine(torch_threads: int) -> Dict[str, Any]:
    """CPU model, cores, memory, torch threads, load average."""
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu_model": model, "logical_cpus": os.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
            "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "torch_threads": torch_threads, "torch": torch.__version__,
            "python": platform.python_version(), "loadavg_at_start": os.getloadavg()}


def build_cases(inputs: Dict[str, List[bytes]]) -> List[Case]:
    """The measured cases (see the module docstring)."""
    p32, large = inputs["photos"], inputs["large"]
    cases = [Case("classify_32", "default", 32, [body(p32)], "photos")]
    for name, (fmt, dtype) in SEGMENT_FORMATS.items():
        cases.append(Case(f"segment_8_{name}", "default", 8,
                          [body(p32[:8], task="segmentation", encoding_format=fmt,
                                embedding_dtype=dtype)], "photos8"))
    cases.append(Case("large_8", "default", 8, [body(large)], "large"))
    cases.append(Case("large_8_full_decode", "full_decode", 8, [body(large)], "large_full"))
    cases.append(Case("concurrent_32", "default", 32, [body([p]) for p in p32], "photos"))
    cases.append(Case("classify_32_no_batching", "no_batching", 32, [body(p32)], "photos"))
    cases.append(Case("concurrent_32_no_batching", "no_batching", 32, [body([p]) for p in p32],
                      "photos"))
    return cases


def summarize(cases: Sequence[Case]) -> Dict[str, Any]:
    """Per case: time spreads, ratio bare / end to end per round, images/s, bytes, batches,
    server stage seconds per request."""
    out = {}
    for case in cases:
        ratios = [b / e for b, e in zip(case.bare_s, case.e2e_s, strict=True)]
        out[case.name] = {
            "server": case.server, "images": case.images, "clients": len(case.bodies),
            "request_bytes": sum(len(b) for b in case.bodies),
            "response_bytes": case.response_bytes if not case.concurrent else None,
            "response_bytes_per_client": case.response_bytes if case.concurrent else None,
            "e2e_s": spread(case.e2e_s), "bare_s": spread(case.bare_s),
            "ratio_bare_over_e2e": spread(ratios),
            "images_per_s": case.images / statistics.median(case.e2e_s),
            "bare_images_per_s": case.images / statistics.median(case.bare_s),
            "forward_passes_per_round": case.batches.passes / max(1, len(case.e2e_s)),
            "mean_forward_batch": case.batches.mean_batch,
            "forward_batch_histogram_all_rounds": case.batches.histogram(),
            "client_decode_s": case.client_decode_s,
            **_stage_summary(case),
        }
    return out


def _stage_summary(case: Case) -> Dict[str, Any]:
    """Server-side stage times per round (from /metrics deltas), medians over rounds, and how
    the end-to-end time splits into forward passes (in the server) and everything else."""
    names = sorted({name for stages in case.stages for name in stages})
    per_round = {name: [r.get(name, (0.0, 0.0)) for r in case.stages] for name in names}
    forward = [r.get("forward", (0.0, 0.0))[1] for r in case.stages]
    return {
        "server_stages_per_round_median": {
            name: {"observations": statistics.median(c for c, _ in rows),
                   "seconds": statistics.median(t for _, t in rows)}
            for name, rows in per_round.items()},
        "server_forward_over_bare": spread([f / b for f, b in zip(forward, case.bare_s,
                                                                  strict=True)]),
        "e2e_minus_server_forward_s": spread([e - f for e, f in zip(case.e2e_s, forward,
                                                                    strict=True)]),
    }


def concurrency(cases: Dict[str, Case]) -> Dict[str, Any]:
    """Throughput of 32 concurrent single-image clients / one 32-image request, per round."""
    out = {}
    for label, suffix in (("batching_on", ""), ("batching_off", "_no_batching")):
        single, burst = cases[f"classify_32{suffix}"], cases[f"concurrent_32{suffix}"]
        ratios = [s / c for s, c in zip(single.e2e_s, burst.e2e_s, strict=True)]
        out[label] = {"throughput_ratio_concurrent_over_single": spread(ratios),
                      "single_request_images_per_s": 32 / statistics.median(single.e2e_s),
                      "concurrent_images_per_s": 32 / statistics.median(burst.e2e_s),
                      "mean_forward_batch_single_request": single.batches.mean_batch,
                      "mean_forward_batch_concurrent": burst.batches.mean_batch}
    return out


def targets(summary: Dict[str, Any], conc: Optional[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Issue 8's bars against the measured medians (those whose cases ran)."""
    rows = [{"what": f"{case}: bare / end to end", "target": bar,
             "measured": summary[case]["ratio_bare_over_e2e"]["median"],
             "met": summary[case]["ratio_bare_over_e2e"]["median"] >= bar}
            for case, bar in TARGETS.items() if case in summary]
    if conc is None:
        return rows
    on = conc["batching_on"]
    measured = on["throughput_ratio_concurrent_over_single"]["median"]
    rows.append({"what": "32 concurrent single-image clients / one 32-image request "
                         "(batching on)", "target": CONCURRENCY_TARGET, "measured": measured,
                 "met": measured >= CONCURRENCY_TARGET,
                 "mean_forward_batch": on["mean_forward_batch_concurrent"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cases", help="comma-separated subset of the cases (default: all)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-costs", action="store_true")
    parser.add_argument("--truss-dir", type=Path, default=ROOT / "midnight",
                        help="the Truss to serve (e.g. a patched copy, with its ../shared)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=TRUSS_DIR",
                        help="also serve TRUSS_DIR (e.g. a patched copy) with the default "
                             "settings and run every default-server case on it too, as "
                             "CASE@NAME, in the same rounds (A/B side by side)")
    parser.add_argument("--env-variant", action="append", default=[],
                        metavar="NAME=VAR=VALUE[,VAR=VALUE]",
                        help="also run the default cases on a server of --truss-dir with these "
                             "environment settings (e.g. fc2=VFM_FETCH_CONCURRENCY=2)")
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    # SIGTERM unwinds like Ctrl-C, so the servers this run started are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    results: Dict[str, Any] = {
        "what": "Midnight Truss through the real Truss server on 127.0.0.1 vs the same "
                "checkpoint's bare forward pass in-process; ViT-S-size DINOv2 stand-in "
                "(hidden 384, 12 layers, 6 heads, random weights), float32, CPU",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "truss_dir": str(args.truss_dir), "commit": _commit(args.truss_dir),
        "machine": machine(threads), "rounds": args.rounds,
        "note": "machine shared with other agents' jobs; ratios are measured side by side "
                "(paired per round), so load hits both sides",
    }
    log.info("generating inputs")
    inputs = {"photos": photos.photo_jpegs(32), "large": photos.large_jpegs(8),
              "varied": photos.varied_jpegs(256)}
    results["inputs"] = {k: {"count": len(v), "mean_bytes": statistics.mean(map(len, v))}
                         for k, v in inputs.items()}
    cases = build_cases(inputs)
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.name in wanted]
    variants = dict(v.split("=", 1) for v in args.variant)
    env_variants = {name: dict(kv.split("=", 1) for kv in settings.split(","))
                    for name, settings in (v.split("=", 1) for v in args.env_variant)}
    cases += [dataclasses.replace(c, name=f"{c.name}@{v}", server=v, e2e_s=[], bare_s=[],
                                  batches=BatchCounter(), stages=[])
              for v in [*variants, *env_variants] for c in cases if c.server == "default"]
    log.info("JSON encoding micro-benchmark")
    results["json_encoding"] = encoding.run()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        checkpoint = make(Path(tmp) / "vits", **VIT_S)
        env = {"MIDNIGHT_CHECKPOINT": str(checkpoint), "VFM_ALLOW_PRIVATE_URLS": "1",
               "OMP_NUM_THREADS": str(threads)}
        clients = Clients(32)
        stack.callback(clients.close)
        if not args.skip_memory:
            results["memory"] = _memory_phase(args.truss_dir, env, clients, inputs)
        needed = {"default"} | {c.server for c in cases}
        specs = {**{n: (args.truss_dir, extra) for n, extra in SERVERS.items()},
                 **{n: (Path(d), {}) for n, d in variants.items()},
                 **{n: (args.truss_dir, extra) for n, extra in env_variants.items()}}
        servers = {name: stack.enter_context(serve(truss, free_port(), {**env, **extra}))
                   for name, (truss, extra) in specs.items() if name in needed}
        results["model"] = _model_info(servers["default"], clients, inputs)
        backbone = load_backbone(str(checkpoint), input_size=224, mean=(0.5,) * 3,
                                 std=(0.5,) * 3, model_id="bench", precision="float32")
        _rounds(args, cases, servers, clients, backbone, inputs,
                results["model"]["optimal_batch_size"])
        if not args.skip_costs:
            log.info("stage costs in-process")
            results["costs"] = costs.run(backbone, inputs, tiles(inputs["photos"], backbone),
                                         {"classify_32": body(inputs["photos"]),
                                          "large_8": body(inputs["large"])})
        for case in cases:
            if case.name.startswith("segment_8"):
                response = clients.post(servers["default"], case.bodies[0])
                case.client_decode_s = client_decode_seconds(response.content)
    _finish(args.out, results, cases)


def _rounds(args: argparse.Namespace, cases: List[Case], servers: Dict[str, LocalTruss],
            clients: Clients, backbone: Backbone, inputs: Dict[str, List[bytes]],
            micro_batch: int) -> None:
    """Warm every case up once, then `args.rounds` interleaved rounds."""
    references = {"photos": tiles(inputs["photos"], backbone),
                  "photos8": tiles(inputs["photos"][:8], backbone),
                  "large": tiles(inputs["large"], backbone),
                  "large_full": tiles(inputs["large"], backbone, reduced=False)}
    log.info("warm-up")
    for case in cases:
        run_round([case], servers, clients, backbone, references, micro_batch,
                  random.Random(0), True)
        case.e2e_s.clear()
        case.bare_s.clear()
        case.batches = BatchCounter()
        case.stages.clear()
    rng = random.Random(args.seed)
    for index in range(args.rounds):
        started = time.perf_counter()
        run_round(cases, servers, clients, backbone, references, micro_batch, rng,
                  bare_first=index % 2 == 0)
        log.info("round %d/%d in %.1fs (load %.2f)", index + 1, args.rounds,
                 time.perf_counter() - started, os.getloadavg()[0])


def _finish(out: Path, results: Dict[str, Any], cases: List[Case]) -> None:
    """Summaries, targets, JSON, chart, console table."""
    by_name = {c.name: c for c in cases}
    results["cases"] = summarize(cases)
    if all(f"{a}{b}" in by_name for a in ("classify_32", "concurrent_32")
           for b in ("", "_no_batching")):
        results["concurrency"] = concurrency(by_name)
    results["targets"] = targets(results["cases"], results.get("concurrency"))
    results["machine"]["loadavg_at_end"] = os.getloadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    from bench.chart import draw

    chart = draw(results, out.with_suffix(".png"))
    _print(results)
    print(f"wrote {out} and {chart}")


def _commit(truss_dir: Path) -> str:
    """HEAD of the repository holding `truss_dir`, "+dirty" when its shared/ or the Truss has
    uncommitted changes ("unknown" outside git)."""
    repo = truss_dir.resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "shared", truss_dir.name],
                               cwd=repo, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty.strip() else "")


def _model_info(server: LocalTruss, clients: Clients, inputs: Dict[str, List[bytes]]
                ) -> Dict[str, Any]:
    """What the server reports about the loaded stand-in (one 1-image request)."""
    payload = clients.post(server, body(inputs["photos"][:1])).json()
    return {**VIT_S, "model_id": payload["model_id"], "input_size": payload["input_size"],
            "optimal_batch_size": payload["optimal_batch_size"], "precision": "float32 (auto)"}


MEMORY_PLAN = (  # (server settings, request, batch_size or None)
    ("default", "photos_32", None), ("default", "varied_256", None),
    ("default", "large_32_urls", None), ("default", "large_256_urls", None),
    ("default", "large_256_urls", 8),
    ("full_decode", "large_32_urls", None), ("full_decode", "large_256_urls", None),
)


def _memory_phase(truss_dir: Path, env: Dict[str, str], clients: Clients,
                  inputs: Dict[str, List[bytes]]) -> Dict[str, Any]:
    """Peak RSS per request, each on a fresh server (RSS is a high-water mark: a server that
    served a bigger request before keeps that memory) after a 1-image warm-up request."""
    out: Dict[str, Any] = {"note": (
        "RSS of the server's process tree sampled every 20 ms, one fresh server per request, "
        "after a 1-image warm-up; micro-batch cap 32 unless batch_size is given, "
        "VFM_FETCH_CONCURRENCY 8; base64 bodies for photos, URLs (loopback) for the camera "
        "JPEGs")}
    with file_server(inputs["large"]) as base:
        def urls(n: int) -> List[str]:
            return [f"{base}/{i % len(inputs['large'])}.jpg?n={i}" for i in range(n)]

        bodies = {"photos_32": {"image_base64_list": _b64(inputs["photos"])},
                  "varied_256": {"image_base64_list": _b64(inputs["varied"])},
                  "large_32_urls": {"image_urls": urls(32)},
                  "large_256_urls": {"image_urls": urls(256)}}
        for server_name, request, batch_size in MEMORY_PLAN:
            fields = {**bodies[request], **({"batch_size": batch_size} if batch_size else {})}
            label = request + (f"_batch_size_{batch_size}" if batch_size else "")
            with serve(truss_dir, free_port(), {**env, **SERVERS[server_name]}) as server:
                clients.post(server, body(inputs["photos"][:1]))
                out.setdefault(server_name, {})[label] = measure_memory(
                    server, clients, label, orjson.dumps(fields))
    return out


def _b64(images: Sequence[bytes]) -> List[str]:
    return [base64.b64encode(i).decode() for i in images]


def _print(results: Dict[str, Any]) -> None:
    for name, row in results["cases"].items():
        ratio = row["ratio_bare_over_e2e"]
        print(f"{name:<28} ratio {ratio['median']:.2f} [{ratio['p25']:.2f}-{ratio['p75']:.2f}]"
              f"  {row['images_per_s']:6.1f} img/s (bare {row['bare_images_per_s']:.1f})"
              f"  batch {row['mean_forward_batch']:.1f}"
              f"  {row['response_bytes'] or row['response_bytes_per_client']} B")
    for label, row in results.get("concurrency", {}).items():
        r = row["throughput_ratio_concurrent_over_single"]
        print(f"concurrency {label}: x{r['median']:.2f} [{r['p25']:.2f}-{r['p75']:.2f}], mean "
              f"batch {row['mean_forward_batch_concurrent']:.1f} vs "
              f"{row['mean_forward_batch_single_request']:.1f}")
    for row in results["targets"]:
        print(f"{'MET ' if row['met'] else 'MISS'} {row['what']}: {row['measured']:.2f} "
              f">= {row['target']}")


if __name__ == "__main__":
    main()
