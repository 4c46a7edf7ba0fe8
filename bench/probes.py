"""What the benchmark reads from a running server: its Prometheus metrics and its memory.

    scrape(url)            every sample of the server's /metrics/ (Prometheus text)
    forward_batches(s)     (passes, items) so far from vfm_forward_batch_size{model="midnight"}
    stage_seconds(s)       {stage: (count, sum)} from vfm_stage_seconds{model="midnight"}
    RssSampler(pid)        peak resident memory of the server's process tree, sampled every ~20 ms
"""

import dataclasses
import threading
import time
from typing import Dict, List, Tuple

import psutil
import requests
from prometheus_client.parser import text_string_to_metric_families

MODEL = "midnight"


Samples = Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """All samples of the server's `/metrics/`: {(sample name, sorted labels): value}.

    Raises:
        requests.HTTPError: the route did not answer 200.
    """
    response = requests.get(f"{url}/metrics/", timeout=30)
    response.raise_for_status()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def forward_batches(samples: Samples) -> Tuple[float, float, Dict[str, float]]:
    """(forward passes, items forwarded, {bucket upper bound "le": cumulative passes}) so far
    for the Midnight pipeline."""
    key = (("model", MODEL),)
    buckets = {dict(labels)["le"]: value for (name, labels), value in samples.items()
               if name == "vfm_forward_batch_size_bucket" and dict(labels).get("model") == MODEL}
    return (samples.get(("vfm_forward_batch_size_count", key), 0.0),
            samples.get(("vfm_forward_batch_size_sum", key), 0.0), buckets)


def stage_seconds(samples: Samples) -> Dict[str, Tuple[float, float]]:
    """{stage: (observations, total seconds)} of vfm_stage_seconds for the Midnight pipeline."""
    out: Dict[str, Tuple[float, float]] = {}
    for (name, labels), value in samples.items():
        label = dict(labels)
        if label.get("model") != MODEL or "stage" not in label:
            continue
        count, total = out.get(label["stage"], (0.0, 0.0))
        if name == "vfm_stage_seconds_count":
            out[label["stage"]] = (value, total)
        elif name == "vfm_stage_seconds_sum":
            out[label["stage"]] = (count, value)
    return out


@dataclasses.dataclass
class BatchCounter:
    """Forward passes and items accumulated over several measured windows of one server."""

    passes: float = 0.0
    items: float = 0.0
    buckets: Dict[str, float] = dataclasses.field(default_factory=dict)

    def add(self, before: Tuple[float, float, Dict[str, float]],
            after: Tuple[float, float, Dict[str, float]]) -> None:
        self.passes += after[0] - before[0]
        self.items += after[1] - before[1]
        for le, value in after[2].items():
            self.buckets[le] = self.buckets.get(le, 0.0) + value - before[2].get(le, 0.0)

    def histogram(self) -> Dict[str, float]:
        """{"lo-hi" items: passes} (non-cumulative, empty ranges left out)."""
        out, previous, low = {}, 0.0, 1
        for le in sorted(self.buckets, key=float):
            count = self.buckets[le] - previous
            previous = self.buckets[le]
            high = le if le == "+Inf" else str(int(float(le)))
            if count:
                out[f"{low}-{high}" if str(low) != high else high] = count
            low = int(float(le)) + 1 if le != "+Inf" else low
        return out

    @property
    def mean_batch(self) -> float:
        return self.items / self.passes if self.passes else float("nan")


def tree_rss(process: psutil.Process) -> int:
    """Resident bytes of `process` and all its descendants (processes that vanish count 0)."""
    total = 0
    for proc in [process, *process.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class RssSampler:
    """Samples the resident memory of a process tree every `interval_s` in a background thread.

    Use as a context manager around one request: `.peak` is the highest sample, `.samples` the
    (seconds since start, bytes) series.
    """

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.samples: List[Tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._started = 0.0

    def __enter__(self) -> "RssSampler":
        self._started = time.perf_counter()
        self.samples.append((0.0, tree_rss(self.process)))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter() - self._started, tree_rss(self.process)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.samples.append((time.perf_counter() - self._started, tree_rss(self.process)))

    @property
    def peak(self) -> int:
        return max(rss for _, rss in self.samples)

    @property
    def start(self) -> int:
        return self.samples[0][1]
