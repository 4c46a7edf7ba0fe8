"""Split a job into requests under item and byte caps, and run them with bounded concurrency.

Chunks are consecutive runs of items (so results come back in input order). The first request is
sent alone: it settles the encoding negotiation and fails the run fast on a wrong URL or key;
the rest run on `concurrency` threads with at most `2 * concurrency` chunks submitted ahead of
the one being yielded (memory stays bounded by the in-flight requests).
"""

import concurrent.futures
import logging
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from vfm_client.results import Outcome

log = logging.getLogger(__name__)

# JSON overhead of one list entry ("...",) and of the request envelope.
ITEM_OVERHEAD = 4
BODY_OVERHEAD = 512

Chunk = List[int]
SendFn = Callable[[Chunk, bool], Dict[int, Outcome]]


def plan_chunks(indices: Sequence[int], sizes: Sequence[int], groups: Sequence[str],
                max_items: int, max_bytes: int) -> List[Chunk]:
    """Consecutive chunks of `indices`: at most `max_items` items, at most `max_bytes` estimated
    body bytes (`sizes` are each item's encoded size in the body), one `groups` value per chunk
    (e.g. URLs and inline images go in different Midnight fields).

    An item whose size alone exceeds the cap gets a chunk of its own (the client reports it as
    `request_too_large` without sending it).

    Raises:
        ValueError: max_items < 1 or max_bytes <= BODY_OVERHEAD.
    """
    if max_items < 1 or max_bytes <= BODY_OVERHEAD:
        raise ValueError("max_items must be >= 1 and max_bytes > 512")
    chunks: List[Chunk] = []
    current: Chunk = []
    used = BODY_OVERHEAD
    group: Optional[str] = None
    for index, size, grp in zip(indices, sizes, groups, strict=True):
        cost = size + ITEM_OVERHEAD
        if current and (len(current) >= max_items or used + cost > max_bytes or grp != group):
            chunks.append(current)
            current, used = [], BODY_OVERHEAD
        current.append(index)
        used += cost
        group = grp
    if current:
        chunks.append(current)
    return chunks


def run_chunks(chunks: List[Chunk], send: SendFn, concurrency: int,
               on_done: Optional[Callable[[int], None]] = None, probe: int = 0
               ) -> Iterator[Tuple[Chunk, Dict[int, Outcome]]]:
    """Yield `(chunk, outcomes)` for every chunk, in chunk order.

    `send(chunk, probe)` returns one Outcome per index. Chunks up to index `probe` (the first
    that sends a request) run one by one with `probe=True` for that one (a transport failure
    there is a RunError, not item errors); the rest run on `concurrency` threads. `on_done(n)`
    is called with the number of items finished (progress bars).

    Raises:
        whatever `send` raises (RunError for a rejected key / wrong URL): pending chunks are
        cancelled.
    """
    head = chunks[:probe + 1]
    for n, chunk in enumerate(head):
        outcomes = send(chunk, n == probe)
        if on_done:
            on_done(len(chunk))
        yield chunk, outcomes
    rest = chunks[probe + 1:]
    if not rest:
        return
    window = 2 * max(1, concurrency)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency),
                                                 thread_name_prefix="vfm-send")
    futures: List[Optional["concurrent.futures.Future[Dict[int, Outcome]]"]] = []
    finished = False
    try:
        for i, chunk in enumerate(rest):
            while len(futures) < min(len(rest), i + window):
                futures.append(pool.submit(send, rest[len(futures)], False))
            future = futures[i]
            assert future is not None
            outcomes = future.result()
            futures[i] = None  # free the results
            if on_done:
                on_done(len(chunk))
            yield chunk, outcomes
        finished = True
    finally:
        # On an error or Ctrl-C, do not wait here for requests still in flight.
        pool.shutdown(wait=finished, cancel_futures=True)
