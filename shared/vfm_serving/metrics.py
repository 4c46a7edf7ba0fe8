"""Prometheus metrics, served by the Truss server on `/metrics` (its default registry).

Every metric has a `model` label (the pipeline name: midnight, derm, safe). Defined once per
process at import; counts and timings only, never payloads.
"""

import contextlib
import time
from typing import Iterator

from prometheus_client import Counter, Histogram

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

FORWARD_BATCH_SIZE = Histogram(
    "vfm_forward_batch_size", "Items per forward pass (merged across requests).", ["model"],
    buckets=_BATCH_BUCKETS)
QUEUE_WAIT = Histogram(
    "vfm_queue_wait_seconds", "Time an item waited in the batcher before its forward pass.",
    ["model"], buckets=_SECONDS_BUCKETS)
STAGE_SECONDS = Histogram(
    "vfm_stage_seconds", "Time per pipeline stage: body, decode (per item: fetch + decode + "
    "reduce), forward (per pass), encode (per response).", ["model", "stage"],
    buckets=_SECONDS_BUCKETS)
REQUESTS = Counter(
    "vfm_requests_total", "Requests by outcome (ok, client_error, server_error) and error code.",
    ["model", "outcome", "code"])
ITEMS = Counter(
    "vfm_items_total",
    "Images by outcome (ok, client_error, server_error, skipped) and error code.",
    ["model", "outcome", "code"])


@contextlib.contextmanager
def stage_timer(model: str, stage: str) -> Iterator[None]:
    """Observe the duration of the enclosed block as `vfm_stage_seconds{model, stage}`."""
    started = time.perf_counter()
    try:
        yield
    finally:
        STAGE_SECONDS.labels(model, stage).observe(time.perf_counter() - started)
FALLBACKS = Counter(
    "vfm_forward_fallbacks_total", "Forward passes that failed and were re-run one item at a time.",
    ["model"])
