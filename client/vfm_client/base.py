"""What the three API clients share: inputs -> items, the request loop with splitting, the
per-item error rules, and the compact-encoding negotiation.

Rules for an answer to one request of k items:
- 200: decoded into k outcomes (a malformed 200 is `bad_response` for those k items).
- 401/403/404/405/407: the run cannot proceed (RunError): wrong key or URL.
- 429/5xx/no answer: retried by the transport; when attempts run out, each of the k items gets
  the error (`http_503`, `connection_failed`, ...); a `model_error` 5xx on k > 1 items is split
  in halves to find the item the model fails on.
- other 4xx: k = 1 -> that item's error. k > 1 -> if the message names the failing item
  (`image_base64_list[3]: ...`), that item gets the error and the others are resent without it
  (the bad item is never sent again); otherwise the request is split in halves.
"""

import dataclasses
import json
import logging
import os
import re
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import requests

from vfm_client import schemas
from vfm_client.errors import ItemError, RunError, SchemaError
from vfm_client.images import ImageItem, to_item
from vfm_client.jobs import plan_chunks, run_chunks
from vfm_client.results import Outcome, Results
from vfm_client.transport import (
    FATAL_STATUSES,
    RETRY_STATUSES,
    ConnectionFailedError,
    Reply,
    RetryPolicy,
    Transport,
)

log = logging.getLogger(__name__)

NAMED_ITEM = re.compile(r"[A-Za-z0-9_]+\[(\d+)\]:\s*")
ENCODINGS = ("auto", "base64", "float")
DTYPES = ("float32", "float16")
DEFAULT_MAX_BYTES = 32 * 1024 * 1024


@dataclasses.dataclass
class Entry:
    """One item inside a request: its input index, body group and payload text."""

    index: int
    group: str
    payload: str


Prepared = Union[ImageItem, ItemError]


class BaseClient:
    """Shared request loop. Subclasses set `api` and implement `_group`, `_payload`, `_body`,
    `_decode` (and `_refuses_compact` if the API negotiates encodings)."""

    api = ""

    def __init__(self, url: str, api_key: Optional[str] = None, *, max_items: int = 32,
                 max_bytes: int = DEFAULT_MAX_BYTES, concurrency: int = 4,
                 retry: Optional[RetryPolicy] = None, encoding: str = "auto",
                 embedding_dtype: str = "float32", validate: bool = True,
                 seed: Optional[int] = None) -> None:
        """
        Args:
            url: the predict URL (Baseten: `https://model-<id>.api.baseten.co/environments/
                production/predict`; local: `http://127.0.0.1:8101`, the route is added).
            api_key: Baseten API key; default env BASETEN_API_KEY; none for a local server.
            max_items / max_bytes: caps of one request (items; JSON body bytes).
            concurrency: requests in flight at once.
            retry: attempts, backoff and timeouts (see RetryPolicy).
            encoding: "auto" asks for base64 embeddings and falls back to JSON floats (once per
                client) if the server refuses; "base64" or "float" force one.
            embedding_dtype: "float32" (exact) or "float16" (half the bytes) for base64.
            validate: check requests and responses against the JSON Schemas.

        Raises:
            ValueError: a bad url, encoding, dtype or cap.
        """
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}")
        if embedding_dtype not in DTYPES:
            raise ValueError(f"embedding_dtype must be one of {DTYPES}")
        if max_items < 1 or concurrency < 1:
            raise ValueError("max_items and concurrency must be >= 1")
        key = api_key if api_key is not None else os.environ.get("BASETEN_API_KEY")
        self.transport = Transport(url, key or None, retry or RetryPolicy(), seed=seed)
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.encoding = encoding
        self.embedding_dtype = embedding_dtype
        self.validate = validate
        # None: not known yet (auto); True/False: compact encodings on/off for this client.
        self._compact: Optional[bool] = {"auto": None, "base64": True, "float": False}[encoding]
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.transport.url

    @property
    def compact(self) -> Optional[bool]:
        """Whether base64 embeddings are in use (None until the first answer in "auto")."""
        return self._compact

    # -- subclass hooks -------------------------------------------------------------------
    def _group(self, item: ImageItem) -> str:
        raise NotImplementedError

    def _payload(self, item: ImageItem, options: Dict[str, Any]) -> str:
        raise NotImplementedError

    def _body(self, entries: List[Entry], options: Dict[str, Any], compact: bool
              ) -> Dict[str, Any]:
        raise NotImplementedError

    def _decode(self, body: Any, entries: List[Entry], options: Dict[str, Any]
                ) -> Dict[int, Outcome]:
        raise NotImplementedError

    def _refuses_compact(self, reply: Reply, code: str, message: str) -> bool:
        return False

    def _size(self, item: ImageItem) -> int:
        return item.base64_size()

    # -- the loop -------------------------------------------------------------------------
    def prepare(self, images: Sequence[Any]) -> List[Prepared]:
        """User inputs -> items (or an ItemError for inputs that cannot be images)."""
        return [to_item(obj, i) for i, obj in enumerate(images)]

    def results(self, images: Sequence[Any], options: Dict[str, Any], progress: bool = False
                ) -> Results:
        """Run every image with `options`; each image's outcome, in input order (never raises for
        one item; a progress bar when `progress`).

        Raises:
            RunError: unreachable server, rejected key / URL.
        """
        prepared = self.prepare(images)
        outcomes: List[Outcome] = [Outcome() for _ in prepared]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=len(prepared), unit="img", desc=self.api)
        try:
            for _, chunk in self.iter_outcomes(prepared, options,
                                               on_done=bar.update if bar else None):
                for i, outcome in chunk.items():
                    outcomes[i] = outcome
        finally:
            if bar:
                bar.close()
        labels = [p.label if isinstance(p, ImageItem) else str(images[i])[:200]
                  for i, p in enumerate(prepared)]
        return Results.from_outcomes(labels, outcomes)

    def iter_outcomes(self, prepared: Sequence[Prepared], options: Dict[str, Any],
                      indices: Optional[Sequence[int]] = None,
                      on_done: Optional[Callable[[int], None]] = None
                      ) -> Iterator[Tuple[List[int], Dict[int, Outcome]]]:
        """Yield (indices, outcomes) chunk by chunk in input order, for `indices` (default all).

        Raises:
            RunError: the server rejected the key / URL, or the first request got no answer.
        """
        todo = list(range(len(prepared)) if indices is None else indices)
        # Inputs that are already errors ride along in their own chunks (no request), so
        # every outcome comes back in input order.
        groups = [self._group(p) if isinstance(p, ImageItem) else "\0error"
                  for p in (prepared[i] for i in todo)]
        sizes = [self._size(p) if isinstance(p, ImageItem) else 0
                 for p in (prepared[i] for i in todo)]
        chunks = plan_chunks(todo, sizes, groups, self.max_items, self.max_bytes)
        probe = next((n for n, c in enumerate(chunks)
                      if isinstance(prepared[c[0]], ImageItem)), len(chunks))
        log.info("%s: %d items in %d requests (<= %d items, <= %d bytes each), concurrency %d",
                 self.api, sum(isinstance(prepared[i], ImageItem) for i in todo),
                 sum(isinstance(prepared[c[0]], ImageItem) for c in chunks), self.max_items,
                 self.max_bytes, self.concurrency)

        def send(chunk: List[int], probe: bool) -> Dict[int, Outcome]:
            return self._send_chunk(prepared, chunk, options, probe)

        yield from run_chunks(chunks, send, self.concurrency, on_done, probe)

    def _send_chunk(self, prepared: Sequence[Prepared], chunk: List[int],
                    options: Dict[str, Any], probe: bool) -> Dict[int, Outcome]:
        out: Dict[int, Outcome] = {}
        entries: List[Entry] = []
        for i in chunk:
            item = prepared[i]
            if isinstance(item, ItemError):
                out[i] = Outcome(error=item)
                continue
            try:
                entries.append(Entry(i, self._group(item), self._payload(item, options)))
            except OSError as exc:
                out[i] = Outcome(error=ItemError("file_unreadable", f"{item.label}: {exc}"))
            except (ConnectionFailedError, requests.RequestException) as exc:
                out[i] = Outcome(error=ItemError("fetch_failed", f"{item.label}: {exc}"))
            except ValueError as exc:
                out[i] = Outcome(error=ItemError("invalid_image", f"{item.label}: {exc}"))
        if entries:
            out.update(self._post(entries, options, probe))
        return out

    def _post(self, entries: List[Entry], options: Dict[str, Any], probe: bool
              ) -> Dict[int, Outcome]:
        compact = self._compact is not False
        body = self._body(entries, options, compact)
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        if len(data) > self.max_bytes:
            if len(entries) == 1:
                return _all(entries, ItemError(
                    "request_too_large", f"{len(data)} bytes in one request; the cap is "
                    f"{self.max_bytes} (raise max_bytes / --max-bytes)"))
            return self._split(entries, options, probe)
        if self.validate:
            try:
                schemas.validate(self.api, "request", body)
            except SchemaError as exc:
                if len(entries) == 1:
                    return _all(entries, ItemError("invalid_request", str(exc)))
                return self._split(entries, options, probe)
        try:
            reply = self.transport.post_bytes(data)
        except ConnectionFailedError as exc:
            if probe:
                raise RunError(f"cannot reach {self.url}: {exc}") from exc
            return _all(entries, ItemError("connection_failed", str(exc)))
        if reply.status == 200:
            return self._accept(reply.body, entries, options)
        code, message = reply.error_code_message()
        if reply.status in FATAL_STATUSES:
            raise RunError(f"HTTP {reply.status} from {self.url}: {message or code} "
                           "(check the URL and the API key)")
        if compact and self._compact is None and self._refuses_compact(reply, code, message):
            with self._lock:
                self._compact = False
            log.info("%s: server refuses compact encodings (%s); using JSON floats", self.api,
                     message)
            return self._post(entries, options, probe)
        # The message names the item by its place in this request: drop that prefix.
        prefix = NAMED_ITEM.match(message)
        error = ItemError(code, message[prefix.end():] if prefix else message, reply.status)
        if reply.status in RETRY_STATUSES:
            if code == "model_error" and len(entries) > 1:
                return self._split(entries, options, False)
            return _all(entries, error)
        if len(entries) == 1:
            return _all(entries, error)
        named = _named_item(message, len(entries))
        if named is not None:
            out = {entries[named].index: Outcome(error=error)}
            out.update(self._post(entries[:named] + entries[named + 1:], options, False))
            return out
        return self._split(entries, options, False)

    def _split(self, entries: List[Entry], options: Dict[str, Any], probe: bool
               ) -> Dict[int, Outcome]:
        half = len(entries) // 2
        out = self._post(entries[:half], options, probe)
        out.update(self._post(entries[half:], options, False))
        return out

    def _accept(self, body: Any, entries: List[Entry], options: Dict[str, Any]
                ) -> Dict[int, Outcome]:
        try:
            if self.validate:
                schemas.validate(self.api, "response", body)
            return self._decode(body, entries, options)
        except (SchemaError, ValueError, KeyError, TypeError) as exc:
            log.error("%s: malformed 200 response: %s", self.api, exc)
            return _all(entries, ItemError("bad_response", f"malformed response: {exc}", 200))

    def _set_compact(self, value: bool) -> None:
        with self._lock:
            if self._compact is None:
                self._compact = value


def _all(entries: List[Entry], error: ItemError) -> Dict[int, Outcome]:
    return {e.index: Outcome(error=error) for e in entries}


def _named_item(message: str, count: int) -> Optional[int]:
    """Index named at the start of a Midnight error message (`image_urls[3]: ...`)."""
    match = NAMED_ITEM.match(message)
    if match and int(match.group(1)) < count:
        return int(match.group(1))
    return None
