"""Benchmark: Midnight throughput by micro-batch size, side by side, through the real Truss server.

Serves a ViT-S-sized stand-in (random weights, real Dinov2Model class; not Midnight's numbers or
speed) and sends the same 32-image request with each `batch_size`, interleaved over rounds so
machine noise hits every setting alike. Reports images/s per setting and the ratio to
batch_size=1, and writes bench/results/midnight_batching.json.

    .venv/bin/python -m bench.midnight_batching [--rounds 3] [--images 32]
"""

import argparse
import json
import logging
import platform
import statistics
import tempfile
import time
from pathlib import Path

from tools.local_server import ROOT, free_port, serve
from tools.manifest import sample_png_base64
from tools.standins.midnight import make

log = logging.getLogger("bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--batch-sizes", default="1,4,16,32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sizes = [int(s) for s in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = make(Path(tmp) / "vits", hidden_size=384, layers=12, heads=6)
        env = {"MIDNIGHT_CHECKPOINT": str(checkpoint), "VFM_MAX_BATCH_SIZE": str(max(sizes))}
        images = [sample_png_base64(n) for n in ("astronaut", "coffee", "chelsea", "rocket")]
        body = {"image_base64_list": [images[i % 4] for i in range(args.images)]}
        timings = {s: [] for s in sizes}
        with serve(ROOT / "midnight", free_port(), env) as server:
            server.predict({**body, "batch_size": sizes[0]})  # warm-up
            for _ in range(args.rounds):
                for size in sizes:
                    started = time.perf_counter()
                    response = server.predict({**body, "batch_size": size})
                    response.raise_for_status()
                    timings[size].append(time.perf_counter() - started)
    base = statistics.median(timings[sizes[0]])
    results = {
        "what": "Midnight truss, ViT-S stand-in (hidden 384, 12 layers), CPU, real Truss server",
        "images_per_request": args.images, "rounds": args.rounds,
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "by_batch_size": {str(s): {"median_s": statistics.median(t),
                                   "images_per_s": args.images / statistics.median(t),
                                   "speedup_vs_batch_1": base / statistics.median(t)}
                          for s, t in timings.items()},
    }
    out = ROOT / "bench" / "results" / "midnight_batching.json"
    out.write_text(json.dumps(results, indent=2))
    for size, row in results["by_batch_size"].items():
        print(f"batch_size={size:>3}: {row['images_per_s']:.1f} images/s "
              f"(x{row['speedup_vs_batch_1']:.2f} vs batch_size=1)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
