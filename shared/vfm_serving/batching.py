"""Batching: the per-request batch-size cap, fixed micro-batches, and the dynamic batcher that
merges items of concurrent requests into one forward pass. Nothing is ever dropped or padded."""

import collections
import concurrent.futures
import dataclasses
import itertools
import logging
import threading
import time
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Sequence, TypeVar

from vfm_serving import metrics
from vfm_serving.errors import InvalidBatchSize, ModelError, ServingError

log = logging.getLogger(__name__)
T = TypeVar("T")

# forward(items) -> one result per item, in order; a result may be a ServingError for that item.
ForwardFn = Callable[[List[Any]], List[Any]]


def resolve_batch_size(requested: object, *, default: int, maximum: int) -> int:
    """Batch-size cap for a request's items.

    Args:
        requested: the client's `batch_size` (None -> `default`); must be an int >= 1.
        default: cap used when the client names none.
        maximum: cap from settings; a larger request is lowered to it.

    Raises:
        InvalidBatchSize: not an integer (bools rejected) or below 1.
    """
    if requested is None:
        return min(default, maximum)
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise InvalidBatchSize("batch_size must be an integer >= 1")
    if requested < 1:
        raise InvalidBatchSize("batch_size must be an integer >= 1")
    return min(requested, maximum)


def micro_batches(items: Sequence[T], size: int) -> Iterator[List[T]]:
    """Yield `items` in order as lists of at most `size`; together they hold every item once."""
    if size < 1:
        raise ValueError("micro-batch size must be >= 1")
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """Which forward pass carried an item: its id (unique per batcher) and its size."""

    batch_id: int
    size: int


@dataclasses.dataclass(eq=False)  # identity: the queue removes exactly this entry
class _Pending:
    item: Any
    cap: int
    group: object
    future: "concurrent.futures.Future[Any]"
    enqueued: float


class DynamicBatcher:
    """One worker thread that owns the model: it takes queued items (from any request), waits at
    most `max_wait_s` after the oldest one for the batch to fill, and runs one forward pass.

    Items announced with `expect(group)` (being fetched / decoded right now) keep a pass that is
    not full open longer, up to `fill_wait_s` after the oldest queued item: an 8-image request
    becomes one pass of 8 instead of passes of whatever finished decoding first. `submit(...,
    expected=True)` or `withdraw(group)` settles each announcement.

    Each item carries a cap (its request's batch size): a forward pass never holds more items
    than the smallest cap among them, nor more than `max_batch_size`. Items are taken in arrival
    order; an item that does not fit the current pass waits for the next one. With
    `merge_groups=False` a pass holds items of one group (one request) only.

    A forward that raises fails no item outright: a multi-item pass is retried one item at a
    time, and an item failing alone gets a ModelError. Futures resolve to (result, BatchInfo).
    """

    def __init__(self, forward: ForwardFn, *, max_batch_size: int, max_wait_s: float,
                 name: str, merge_groups: bool = True, fill_wait_s: float = 0.0) -> None:
        if max_batch_size < 1 or max_wait_s < 0 or fill_wait_s < 0:
            raise ValueError("max_batch_size must be >= 1, max_wait_s and fill_wait_s >= 0")
        self._forward = forward
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.fill_wait_s = max(fill_wait_s, max_wait_s)
        self.name = name
        self.merge_groups = merge_groups
        self._queue: Deque[_Pending] = collections.deque()
        self._cond = threading.Condition()
        self._ids = itertools.count(1)
        self._coming: Dict[int, int] = {}  # id(group) -> announced items not yet submitted
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"batcher-{name}", daemon=True)
        self._thread.start()

    def expect(self, group: object) -> None:
        """Announce one item of `group` that is on its way (settle it with `submit(...,
        expected=True)` or `withdraw`)."""
        with self._cond:
            self._coming[id(group)] = self._coming.get(id(group), 0) + 1

    def withdraw(self, group: object) -> None:
        """An announced item of `group` will not come (its decode failed or was cancelled)."""
        with self._cond:
            self._settle(group)
            self._cond.notify()

    def submit(self, item: Any, cap: Optional[int] = None, group: object = None, *,
               expected: bool = False) -> "concurrent.futures.Future[Any]":
        """Queue one item of `group` (its request); the future resolves to (forward result,
        BatchInfo). `expected`: the item was announced with `expect(group)`.

        Raises:
            RuntimeError: the batcher is closed.
        """
        future: "concurrent.futures.Future[Any]" = concurrent.futures.Future()
        cap = self.max_batch_size if cap is None else max(1, min(cap, self.max_batch_size))
        with self._cond:
            if expected:
                self._settle(group)
            if self._closed:
                raise RuntimeError("batcher is closed")
            self._queue.append(_Pending(item, cap, group, future, time.monotonic()))
            self._cond.notify()
        return future

    def _settle(self, group: object) -> None:
        """One announced item of `group` arrived or was withdrawn (caller holds the lock)."""
        left = self._coming.get(id(group), 0) - 1
        if left > 0:
            self._coming[id(group)] = left
        else:
            self._coming.pop(id(group), None)

    def _more_coming(self) -> bool:
        """Could an announced item still join the pass being formed? (caller holds the lock)"""
        if self.merge_groups:
            return bool(self._coming)
        return id(self._queue[0].group) in self._coming

    def close(self) -> None:
        """Stop the worker after the queued items are done."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        """Worker loop. A bug in a pass fails that pass's items (ModelError), never the worker:
        a dead worker would leave every later request waiting forever."""
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._execute(batch)
            except Exception:
                log.exception("%s: batcher failed on a pass of %d items", self.name, len(batch))
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_result((ModelError("internal error in the batcher"),
                                                   BatchInfo(0, len(batch))))

    def _next_batch(self) -> Optional[List[_Pending]]:
        """Block for the next batch (arrival order, caps respected); None once closed and empty."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            oldest = self._queue[0].enqueued
            while True:
                chosen, limit = _select(self._queue, self.max_batch_size, self.merge_groups)
                wait = self.fill_wait_s if self._more_coming() else self.max_wait_s
                remaining = oldest + wait - time.monotonic()
                if len(chosen) >= limit or remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            for pending in chosen:
                self._queue.remove(pending)
            return chosen

    def _execute(self, batch: List[_Pending]) -> None:
        """Run one forward pass and resolve every future of the batch (never raises)."""
        info = BatchInfo(next(self._ids), len(batch))
        now = time.monotonic()
        for pending in batch:
            metrics.QUEUE_WAIT.labels(self.name).observe(now - pending.enqueued)
        metrics.FORWARD_BATCH_SIZE.labels(self.name).observe(len(batch))
        with metrics.stage_timer(self.name, "forward"):
            results = self._forward_with_fallback([p.item for p in batch])
        for pending, result in zip(batch, results, strict=True):
            if not pending.future.cancelled():
                pending.future.set_result((result, info))

    def _forward_with_fallback(self, items: List[Any]) -> List[Any]:
        """forward(items), or one item at a time when the pass raises; ModelError for a culprit."""
        try:
            results = self._forward(items)
            if len(results) != len(items):
                raise RuntimeError(f"forward returned {len(results)} results for {len(items)}")
            return results
        except Exception as exc:
            log.exception("%s: forward pass of %d items failed", self.name, len(items))
            if len(items) == 1:
                return [ModelError(f"the model could not process this image "
                                   f"({type(exc).__name__})")]
        return [self._forward_with_fallback([item])[0] for item in items]


def _select(queue: Deque[_Pending], max_batch_size: int, merge_groups: bool
            ) -> "tuple[List[_Pending], int]":
    """Items for the next pass in arrival order, and the size limit their caps allow."""
    chosen: List[_Pending] = []
    limit = max_batch_size
    for pending in queue:
        if not merge_groups and pending.group is not queue[0].group:
            continue
        new_limit = min(limit, pending.cap)
        if len(chosen) + 1 <= new_limit:
            chosen.append(pending)
            limit = new_limit
            if len(chosen) >= limit:
                break
    return chosen, limit


def is_error(result: Any) -> bool:
    """True when a forward result is an item's ServingError."""
    return isinstance(result, ServingError)
