"""HTTP with retries: 429, 5xx and connection errors are retried with exponential backoff and
full jitter (a `Retry-After` header wins); any other 4xx is returned at once, never retried.

One `requests.Session` per worker thread (keep-alive, no shared mutable state). The API key goes
in `Authorization: Api-Key <key>` (Baseten) and is never logged.
"""

import dataclasses
import email.utils
import json
import logging
import random
import threading
import time
from typing import Any, Callable, Dict, Optional, Tuple

import requests

from vfm_client import __version__

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))
# The run cannot go on past these: wrong key, wrong URL, wrong method.
FATAL_STATUSES = frozenset({401, 403, 404, 405, 407})


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one request.

    max_attempts: tries in all (1 = no retry). backoff_base_s / backoff_max_s: the n-th retry
    waits uniform(0, min(backoff_max_s, backoff_base_s * 2**n)) ("full jitter").
    max_retry_after_s: longest `Retry-After` honoured (longer ones are cut to it).
    connect_timeout_s / read_timeout_s: per attempt (Baseten's sync requests end at 1200 s).
    """

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 300.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 1200.0


@dataclasses.dataclass
class Reply:
    """A final HTTP answer: status, parsed JSON body (None if not JSON), attempts used."""

    status: int
    body: Any
    attempts: int
    text: str = ""

    def error_code_message(self) -> Tuple[str, str]:
        """(code, message) of an error body: ours `{"error": {"code", "message"}}`, Truss's
        `{"error": "text"}`, or `http_<status>` and the start of the text."""
        err = self.body.get("error") if isinstance(self.body, dict) else None
        if isinstance(err, dict):
            return str(err.get("code") or f"http_{self.status}"), str(err.get("message") or "")
        if isinstance(err, str):
            return f"http_{self.status}", err
        return f"http_{self.status}", self.text[:300]


class ConnectionFailedError(Exception):
    """No HTTP answer after every attempt (refused, reset, dropped, timed out)."""


def parse_retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date); None if absent
    or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class Transport:
    """POSTs JSON to one predict URL with the retry policy; thread-safe."""

    def __init__(self, url: str, api_key: Optional[str] = None,
                 retry: Optional[RetryPolicy] = None, seed: Optional[int] = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = normalize_url(url)
        self.retry = retry or RetryPolicy()
        self._headers = {"Content-Type": "application/json",
                         "User-Agent": f"vfm-client/{__version__}"}
        if api_key:
            self._headers["Authorization"] = f"Api-Key {api_key}"
        self._local = threading.local()
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._sleep = sleep

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def backoff(self, retry_index: int, retry_after: Optional[float]) -> float:
        """Seconds to wait before retry number `retry_index` (0-based)."""
        with self._random_lock:
            jitter = self._random.uniform(0, min(self.retry.backoff_max_s,
                                                 self.retry.backoff_base_s * 2 ** retry_index))
        if retry_after is not None:
            return min(retry_after, self.retry.max_retry_after_s) + jitter * 0.1
        return jitter

    def post_json(self, body: Dict[str, Any]) -> Reply:
        """POST `body` as JSON; retry per the policy; return the final answer.

        A 2xx or non-retryable 4xx returns at once. After the last attempt a retryable status
        is returned as is.

        Raises:
            ConnectionFailedError: the last attempt got no HTTP answer at all.
        """
        data = json.dumps(body, separators=(",", ":")).encode("utf-8")
        return self.post_bytes(data)

    def post_bytes(self, data: bytes) -> Reply:
        """As `post_json`, for an already-encoded JSON body."""
        timeout = (self.retry.connect_timeout_s, self.retry.read_timeout_s)
        last_error: Optional[BaseException] = None
        for attempt in range(1, self.retry.max_attempts + 1):
            retry_after: Optional[float] = None
            try:
                response = self._session().post(self.url, data=data, headers=self._headers,
                                                timeout=timeout)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                last_error = exc
                self._drop_session()
                log.warning("attempt %d/%d to %s: no answer (%s)", attempt,
                            self.retry.max_attempts, self.url, type(exc).__name__)
            else:
                reply = _reply(response, attempt)
                if reply.status not in RETRY_STATUSES or attempt == self.retry.max_attempts:
                    return reply
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                log.warning("attempt %d/%d to %s: HTTP %d%s", attempt, self.retry.max_attempts,
                            self.url, reply.status,
                            f" (Retry-After {retry_after:g}s)" if retry_after is not None else "")
            if attempt < self.retry.max_attempts:
                self._sleep(self.backoff(attempt - 1, retry_after))
        raise ConnectionFailedError(f"no answer from {self.url} after "
                                    f"{self.retry.max_attempts} attempts: {last_error}")

    def get_bytes(self, url: str) -> bytes:
        """GET an image URL (for APIs that take bytes only) with the same retry policy.

        Raises:
            ConnectionFailedError: no answer after every attempt.
            requests.HTTPError: a final non-2xx answer.
        """
        timeout = (self.retry.connect_timeout_s, self.retry.read_timeout_s)
        last_error: Optional[BaseException] = None
        for attempt in range(1, self.retry.max_attempts + 1):
            retry_after: Optional[float] = None
            try:
                response = self._session().get(url, timeout=timeout)
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                last_error = exc
                self._drop_session()
            else:
                if response.status_code not in RETRY_STATUSES or \
                        attempt == self.retry.max_attempts:
                    response.raise_for_status()
                    return response.content
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt < self.retry.max_attempts:
                self._sleep(self.backoff(attempt - 1, retry_after))
        raise ConnectionFailedError(f"no answer from {url} after {self.retry.max_attempts} "
                                    f"attempts: {last_error}")

    def _drop_session(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None


def _reply(response: requests.Response, attempt: int) -> Reply:
    try:
        body = response.json()
    except ValueError:
        body = None
    return Reply(response.status_code, body, attempt, "" if body is not None else response.text)


def normalize_url(url: str) -> str:
    """A predict URL; a bare `http://host:port` gets the Truss route `/v1/models/model:predict`.

    Raises:
        ValueError: not an http(s) URL.
    """
    url = url.strip()
    if not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"--url must be an http(s) URL, got {url!r}")
    scheme, _, rest = url.partition("://")
    if "/" not in rest or rest.endswith("://") or rest.split("/", 1)[1] == "":
        return f"{scheme}://{rest.rstrip('/')}/v1/models/model:predict"
    return url
