"""The one serving pipeline every Truss runs (LitServe-style: decode -> batch -> forward -> encode).

    body    http.request.read_limited + http.body.read_body   raw bytes -> JSON-like value
    parse   api.parse(body) -> ParsedRequest                   (apis/<api>.py: no torch, no TF)
    decode  inputs.sources.source_bytes + runner.prepare       per item, in a thread pool
    batch   batching.DynamicBatcher                            items of concurrent requests merged
    forward runner.forward(items)                              one pass, on the batcher's thread
    encode  api.respond(request, results) + http.errors.json_response, in a thread

A model plugs in with a Runner (its weights and forward pass) and an Api (its request and
response shapes); `model.py` only builds them in `load()` and forwards the raw request.
"""

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from typing import Any, List, Optional, Protocol, Sequence, Union

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from vfm_serving import metrics
from vfm_serving.batching import BatchInfo, DynamicBatcher
from vfm_serving.errors import InternalError, ServingError
from vfm_serving.http.body import read_body
from vfm_serving.http.errors import error_response, json_response
from vfm_serving.http.request import read_limited
from vfm_serving.inputs.sources import ImageSource, labelled, source_bytes
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)
# Bodies up to this size are parsed on the event loop (a thread hop costs more than the parse);
# larger ones (tens of MB of base64 images take ~0.1 s) in a worker thread.
INLINE_BODY_BYTES = 256 * 1024


@dataclasses.dataclass(frozen=True)
class ParsedRequest:
    """A validated request.

    items: per image, its source, or the ServingError it already has (per-item APIs).
    batch_cap: most of this request's items one forward pass may hold (None: the runner's).
    fail_fast: True -> the first failing item (in request order) fails the whole request;
        False -> every item gets its own result or error (Derm).
    options: API-specific choices (task, output encoding, ...), read by runner and api.
    """

    items: Sequence[Union[ImageSource, ServingError]]
    batch_cap: Optional[int]
    fail_fast: bool
    options: Any = None


@dataclasses.dataclass(frozen=True)
class ItemResult:
    """One item's forward output or error, and the forward pass that carried it (if any)."""

    value: Any
    batch: Optional[BatchInfo] = None

    @property
    def failed(self) -> bool:
        return isinstance(self.value, ServingError)


class Runner(Protocol):
    """A model's own part: decode one item for it, run a forward pass over many."""

    optimal_batch_size: int

    def prepare(self, data: bytes, request: ParsedRequest) -> Any:
        """Encoded image bytes -> a model-ready item (CPU; thread-safe). Raises ServingError."""

    def forward(self, items: List[Any]) -> List[Any]:
        """One pass over items -> one output (or ServingError) per item, in order."""

    def golden_item(self) -> Any:
        """A fixed model-ready item (as `prepare` returns) for the health check."""

    def health_vector(self, output: Any) -> np.ndarray:
        """Numbers of an output that must not drift between load and later health checks."""


class Api(Protocol):
    """A public API contract: request parsing and response shaping only."""

    def parse(self, body: Any) -> ParsedRequest:
        """JSON-like body -> ParsedRequest. Raises ServingError for a malformed request."""

    def respond(self, request: ParsedRequest, results: List[ItemResult]) -> Any:
        """Per-item results -> JSON-ready payload (numpy arrays allowed)."""


class ServingPipeline:
    """One model's request flow; `handle` is all a `model.py` predict calls."""

    def __init__(self, name: str, api: Api, runner: Runner, settings: ServingSettings) -> None:
        self.name = name
        self.api = api
        self.runner = runner
        self.settings = settings
        self.batcher = DynamicBatcher(runner.forward, max_batch_size=runner.optimal_batch_size,
                                      max_wait_s=settings.batch_max_wait_ms / 1000, name=name,
                                      merge_groups=settings.dynamic_batching,
                                      fill_wait_s=settings.batch_fill_wait_ms / 1000)
        self._decoders = concurrent.futures.ThreadPoolExecutor(
            max_workers=settings.fetch_concurrency, thread_name_prefix=f"{name}-decode")
        # Fetching waits on the network (fetch_concurrency threads); preparing is CPU work
        # (decode, resize, SAFE's forensics): at most decode_slots() of it at once.
        self._cpu_slots = threading.BoundedSemaphore(settings.decode_slots())
        self._golden: Optional[np.ndarray] = None
        self._last_health = (0.0, False)

    async def handle(self, request: Request) -> Response:
        """Raw HTTP request -> response; never raises (errors become their status and body)."""
        started = time.perf_counter()
        try:
            with metrics.stage_timer(self.name, "body"):
                raw = await read_limited(request, self.settings.max_request_bytes)
                content_type = request.headers.get("content-type")
                if len(raw) > INLINE_BODY_BYTES:  # keep the event loop free for other requests
                    body = await asyncio.to_thread(read_body, raw, content_type, self.settings)
                else:
                    body = read_body(raw, content_type, self.settings)
            parsed = self.api.parse(body)
            results = await self.run(parsed)
            response = await asyncio.to_thread(self._encode, parsed, results)
        except Exception as err:  # noqa: BLE001 - the HTTP edge: every error gets a response
            code = err.code if isinstance(err, ServingError) else "internal_error"
            outcome = "client_error" if getattr(err, "client_error", False) else "server_error"
            metrics.REQUESTS.labels(self.name, outcome, code).inc()
            log.info("%s: request failed (%s) in %.3fs", self.name, code,
                     time.perf_counter() - started)
            return error_response(err, self.name)
        metrics.REQUESTS.labels(self.name, "ok", "").inc()
        log.info("%s: %d items in %.3fs", self.name, len(results), time.perf_counter() - started)
        return response

    async def run(self, parsed: ParsedRequest) -> List[ItemResult]:
        """Decode, batch and forward every item; results in request order.

        At most `fetch_concurrency` items of all requests decode at once (full-size images in
        memory), and at most `inflight_limit` items of one request are decoded but not yet
        forwarded, so memory follows the batch size, not the request size.

        Raises:
            ServingError: with `fail_fast`, the first failing item's error (request order).
        """
        results: List[Optional[ItemResult]] = [None] * len(parsed.items)
        gate = asyncio.Semaphore(self.inflight_limit(parsed))
        failed = asyncio.Event()

        async def one(index: int, source: Union[ImageSource, ServingError]) -> None:
            result = await self._item(source, parsed, gate, failed)
            if result.failed:
                failed.set()
            results[index] = result

        await asyncio.gather(*(one(i, s) for i, s in enumerate(parsed.items)))
        done = [r for r in results if r is not None]
        self._count_items(done)
        if parsed.fail_fast:
            first = next((r.value for r in done if r.failed and r.value is not _SKIPPED), None)
            if first is not None:
                raise first
        return done

    def inflight_limit(self, parsed: ParsedRequest) -> int:
        """Items of one request decoded but not yet forwarded, at most."""
        cap = parsed.batch_cap or self.batcher.max_batch_size
        return max(self.settings.fetch_concurrency, 2 * cap)

    async def _item(self, source: Union[ImageSource, ServingError], parsed: ParsedRequest,
                    gate: asyncio.Semaphore, failed: asyncio.Event) -> ItemResult:
        """One item through decode, batch and forward; its error instead of raising."""
        if isinstance(source, ServingError):
            return ItemResult(source)
        async with gate:
            if parsed.fail_fast and failed.is_set():
                return ItemResult(_SKIPPED)
            loop = asyncio.get_running_loop()
            self.batcher.expect(parsed)  # a pass being formed may wait for this item's decode
            submitted = False
            try:
                item = await loop.run_in_executor(self._decoders, self._prepare, source, parsed)
                if parsed.fail_fast and failed.is_set():
                    return ItemResult(_SKIPPED)
                future = self.batcher.submit(item, parsed.batch_cap, group=parsed, expected=True)
                submitted = True
            except ServingError as err:
                return ItemResult(labelled(err, source))
            finally:
                if not submitted:  # failed, skipped or cancelled: nothing more is coming
                    self.batcher.withdraw(parsed)
            value, info = await asyncio.wrap_future(future)
            if isinstance(value, ServingError):
                value = labelled(value, source)
            return ItemResult(value, info)

    def _prepare(self, source: ImageSource, parsed: ParsedRequest) -> Any:
        """Fetch and decode one item (decode thread).

        Raises:
            ServingError: the item's own error; InternalError for an unexpected failure.
        """
        with metrics.stage_timer(self.name, "decode"):
            try:
                data = source_bytes(source, self.settings)
                with self._cpu_slots:
                    return self.runner.prepare(data, parsed)
            except ServingError:
                raise
            except Exception as exc:
                log.exception("%s: unexpected error preparing an item", self.name)
                raise InternalError(f"unexpected {type(exc).__name__} while preparing the "
                                    "image") from exc

    def _encode(self, parsed: ParsedRequest, results: List[ItemResult]) -> Response:
        """Shape and encode the response (worker thread: large bodies must not block the loop)."""
        with metrics.stage_timer(self.name, "encode"):
            return json_response(self.api.respond(parsed, results))

    def _count_items(self, results: List[ItemResult]) -> None:
        for result in results:
            value = result.value
            if value is _SKIPPED:
                metrics.ITEMS.labels(self.name, "skipped", "").inc()
            elif isinstance(value, ServingError):
                outcome = "client_error" if value.client_error else "server_error"
                metrics.ITEMS.labels(self.name, outcome, value.code).inc()
            else:
                metrics.ITEMS.labels(self.name, "ok", "").inc()

    # Health: a golden inference recorded at load, repeated by the readiness probe.

    def record_golden(self) -> None:
        """Run the golden input once (warm-up included) and remember its numbers.

        Raises:
            RuntimeError: the model cannot embed the golden image or returns non-finite numbers.
        """
        self._golden = self._golden_vector()
        if not np.all(np.isfinite(self._golden)):
            raise RuntimeError("golden inference returned non-finite numbers")
        self._last_health = (time.monotonic(), True)

    def healthy(self) -> bool:
        """Repeat the golden inference (at most once per `health_recheck_s`) and compare."""
        checked_at, ok = self._last_health
        if self._golden is None:
            return False
        if time.monotonic() - checked_at < self.settings.health_recheck_s:
            return ok
        try:
            vector = self._golden_vector()
            ok = bool(np.all(np.isfinite(vector)) and _cosine(vector, self._golden) >= 0.999)
        except Exception:
            log.exception("%s: golden inference failed", self.name)
            ok = False
        if not ok:
            log.error("%s: golden inference no longer matches the answer recorded at load",
                      self.name)
        self._last_health = (time.monotonic(), ok)
        return ok

    def _golden_vector(self) -> np.ndarray:
        item = self.runner.golden_item()
        value, _ = self.batcher.submit(item, 1).result(timeout=self.settings.fetch_timeout_s * 4)
        if isinstance(value, ServingError):
            raise value
        return np.asarray(self.runner.health_vector(value), dtype=np.float64).reshape(-1)


class _SkippedError(ServingError):
    """Placeholder for an item not run because an earlier one already failed its request."""

    code = "skipped"


_SKIPPED = _SkippedError("not run: another image of this request failed")


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / denom if denom > 0 else float(np.array_equal(a, b))
