"""Download image bytes from http(s) URLs with timeouts and a size cap.

Hardening hook: `fetch_url` is the one place a URL turns into a socket; SSRF-safe address checks
belong here.
"""

import logging
import time
from typing import Mapping, Optional
from urllib.parse import urlsplit

import requests

from vfm_serving.errors import FetchFailed, ImageTooLarge, InvalidUrl

log = logging.getLogger(__name__)
_CHUNK = 64 * 1024


def validate_url(url: object) -> str:
    """Return `url` if it is an absolute http/https URL with a host.

    Raises:
        InvalidUrl: anything else (other schemes, no host, not a string).
    """
    if not isinstance(url, str) or not url.strip():
        raise InvalidUrl("image URL must be a non-empty string")
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidUrl("image URL must be an absolute http:// or https:// URL")
    return url.strip()


def fetch_url(url: str, *, max_bytes: int, timeout_s: float,
              headers: Optional[Mapping[str, str]] = None,
              session: Optional[requests.Session] = None) -> bytes:
    """GET `url` and return its body, streaming so a huge body is cut off at `max_bytes`.

    `headers` may carry credentials: they are sent, never logged or put in error messages.

    Raises:
        InvalidUrl: see `validate_url`.
        FetchFailed: connection error, timeout, or a non-2xx status (the status is named).
        ImageTooLarge: body longer than `max_bytes`.
    """
    url = validate_url(url)
    host = urlsplit(url).hostname
    started = time.perf_counter()
    getter = session.get if session is not None else requests.get
    try:
        with getter(url, headers=dict(headers or {}), timeout=timeout_s, stream=True,
                    allow_redirects=True) as response:
            if not 200 <= response.status_code < 300:
                raise FetchFailed(f"download from {host} failed with HTTP {response.status_code}")
            declared = response.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageTooLarge(f"image at {host} is larger than the limit of {max_bytes} bytes")
            body = bytearray()
            for chunk in response.iter_content(_CHUNK):
                body.extend(chunk)
                if len(body) > max_bytes:
                    raise ImageTooLarge(
                        f"image at {host} is larger than the limit of {max_bytes} bytes")
    except requests.Timeout:
        raise FetchFailed(f"download from {host} timed out after {timeout_s:g}s") from None
    except requests.RequestException as exc:
        raise FetchFailed(f"download from {host} failed: {type(exc).__name__}") from None
    log.info("fetched %d bytes from %s in %.3fs", len(body), host, time.perf_counter() - started)
    return bytes(body)
