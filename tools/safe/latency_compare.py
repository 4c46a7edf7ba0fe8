"""SAFE latency of two versions of the Truss, side by side: 1024x768 JPEG requests (quality 90)
sent alternately to a server of an older commit and one of this checkout, so machine load hits
both alike.

    PYTHONPATH=shared:. python -m tools.safe.latency_compare --before 038aedd \\
        --out bench/results/safe_latency.json

The older commit is checked out into a temporary git worktree (removed afterwards); both
servers are real local Truss servers (tools.local_server) with their shipped defaults.
"""

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List

import requests

from tools.local_server import free_port, serve
from tools.safe.evaluate import LATENCY_PHOTOS, call
from tools.sample_photos import photo

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def worktree(commit: str) -> Iterator[Path]:
    """A temporary git worktree of `commit` (removed on exit)."""
    with tempfile.TemporaryDirectory(prefix="safe-before-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), commit],
                       check=True, capture_output=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                           check=False, capture_output=True)


def jpeg_bodies() -> List[bytes]:
    """The latency photos at 1024x768, JPEG quality 90."""
    bodies = []
    for name in LATENCY_PHOTOS:
        buf = io.BytesIO()
        photo(name, (1024, 768)).save(buf, format="JPEG", quality=90)
        bodies.append(buf.getvalue())
    return bodies


def compare(before: Path, now: Path, rounds: int) -> Dict[str, object]:
    """Seconds per request of both Truss dirs, alternating (the order flips every round)."""
    bodies = jpeg_bodies()
    times: Dict[str, List[float]] = {"before": [], "now": []}
    with contextlib.ExitStack() as stack, requests.Session() as session:
        urls = {name: stack.enter_context(serve(path, free_port())).predict_url
                for name, path in (("before", before), ("now", now))}
        for url in urls.values():  # warm-up
            for body in bodies:
                call(session, url, body, "image/jpeg")
        for r in range(rounds):
            order = list(urls.items()) if r % 2 == 0 else list(reversed(urls.items()))
            for name, url in order:
                started = time.perf_counter()
                call(session, url, bodies[r % len(bodies)], "image/jpeg")
                times[name].append(time.perf_counter() - started)
    out: Dict[str, object] = {name: {"median_s": statistics.median(v), "min_s": min(v),
                                     "n": len(v)} for name, v in times.items()}
    out["ratio_median"] = statistics.median(times["now"]) / statistics.median(times["before"])
    out["paired_ratio_median"] = statistics.median(
        n / b for n, b in zip(times["now"], times["before"], strict=True))
    out["loadavg"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", required=True, help="git commit of the older version")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--out", type=Path, help="JSON report")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with worktree(args.before) as tree:
        result = compare(tree / "safe_detector", ROOT / "safe_detector", args.rounds)
    result["before_commit"] = args.before
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    log.info("latency: %s", text)


if __name__ == "__main__":
    main()
