"""Run `vfm slide` once per slide under Dask: a local cluster by default, a real one with
`--scheduler`. Dask does the scheduling, worker failure handling and retries; each task is the
ordinary, resumable `vfm slide` command for one slide, writing `OUT_DIR/<slide stem>.parquet`
(+ thumbnails). Rerunning the recipe resumes every slide where it stopped.

    python -m vfm_client.recipes.dask_slides --url URL --out-dir DIR SLIDE...            # local
    python -m vfm_client.recipes.dask_slides --scheduler tcp://sched:8786 --url URL \\
        --out-dir /shared/out /shared/slides/*.svs -- --mpp 0.5 --concurrency 8          # cluster

Arguments after `--` are passed to every `vfm slide` command.

On a cluster, every worker needs `pip install 'vfm-client[slide]'`, the slides and OUT_DIR at
the same paths (a shared filesystem), and BASETEN_API_KEY in its environment (the key is never
put in the task graph). Exit status: the worst of the slides' (1 > 2 > 0).
"""

import argparse
import dataclasses
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Optional, Sequence

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SlideRun:
    """One slide's `vfm slide` run: its command's exit status and the end of its log."""

    slide: str
    out: str
    returncode: int
    log_tail: str


def vfm_command() -> List[str]:
    """`vfm` on this machine's PATH, else this interpreter's `-m vfm_client.cli`."""
    found = shutil.which("vfm")
    return [found] if found else [sys.executable, "-m", "vfm_client.cli"]


def run_slide(slide: str, url: str, out_dir: str, extra: Sequence[str]) -> SlideRun:
    """Run `vfm slide` for one slide (on whichever worker Dask picked)."""
    out = str(Path(out_dir) / f"{Path(slide).stem}.parquet")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    command = [*vfm_command(), "slide", "--url", url, "--out", out, "--no-progress", *extra,
               slide]
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ),
                          check=False)
    return SlideRun(slide, out, done.returncode, done.stderr[-2000:])


def run_slides(client: Any, slides: Sequence[str], url: str, out_dir: str,
               extra: Sequence[str] = (), retries: int = 1) -> List[SlideRun]:
    """Submit one task per slide to a `distributed.Client` and gather the runs, in order.
    `retries`: Dask reruns a task whose worker died (the command resumes where it stopped)."""
    futures = [client.submit(run_slide, slide, url, out_dir, list(extra), pure=False,
                             retries=retries, key=f"vfm-slide-{i}-{Path(slide).name}")
               for i, slide in enumerate(slides)]
    return list(client.gather(futures))


def worst_status(runs: Sequence[SlideRun]) -> int:
    """1 if any run could not proceed, else 2 if any had failed tiles, else 0."""
    codes = {r.returncode for r in runs}
    if codes - {0, 2}:
        return 1
    return 2 if 2 in codes else 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    from distributed import Client, LocalCluster

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="Midnight predict URL")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--scheduler", default=None,
                        help="address of a running Dask scheduler (default: a local cluster)")
    parser.add_argument("--workers", type=int, default=2, help="local cluster workers")
    parser.add_argument("--threads", action="store_true",
                        help="local cluster of threads instead of processes")
    parser.add_argument("slides", nargs="+", metavar="SLIDE")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    extra = argv[split + 1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    cluster = None
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1,
                               processes=not args.threads, dashboard_address=None)
        client = Client(cluster)
    try:
        runs = run_slides(client, [str(Path(s).resolve()) for s in args.slides], args.url,
                          str(Path(args.out_dir).resolve()), extra)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    for run in runs:
        log.info("%s -> %s: exit %d", run.slide, run.out, run.returncode)
        if run.returncode not in (0,):
            log.warning("%s", run.log_tail)
    return worst_status(runs)


if __name__ == "__main__":
    sys.exit(main())
