"""Download `gs://bucket/object` over the GCS JSON API, with the caller's bearer token if any.

    GET {settings.gcs_endpoint}/download/storage/v1/b/{bucket}/o/{quote(object)}?alt=media
    Authorization: Bearer <token>          (omitted: anonymous, for public objects)

The endpoint is a setting (`VFM_GCS_ENDPOINT`) so tests point it at an emulator on loopback. The
configured endpoint is trusted (exempt from the private-address rule, so a loopback emulator
works); anything it redirects to is checked like a client's URL, and the token is not sent there.
Same total deadline (`fetch_timeout_s`) and byte cap (`max_image_bytes`) as URL downloads.
Tokens are sent, never logged, never put in an error message.
"""

import logging
import re
from typing import Dict, Optional, Tuple
from urllib.parse import quote

from vfm_serving.errors import InvalidGcsUri, InvalidRequest
from vfm_serving.inputs.http_fetch import fetch_url
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)

# Google's schema pattern for `gcs_uri` (derm-foundation serving schemata).
GCS_URI_PATTERN = re.compile(r"^gs://.+/[^/]+\.[^/]+$")
# Bucket naming rules: 3-63 chars per dot-separated part, lowercase letters, digits, - _ .,
# starting and ending with a letter or digit; at most 222 chars in total.
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9_.-]{1,220}[a-z0-9]$")
_MAX_OBJECT_BYTES = 1024


def parse_gcs_uri(uri: object) -> Tuple[str, str]:
    """Split `gs://bucket/path/file.ext` into ("bucket", "path/file.ext").

    Raises:
        InvalidGcsUri: not a string, not matching `GCS_URI_PATTERN`, an invalid bucket name, or
            an object name that GCS cannot hold (too long, CR/LF).
    """
    if not isinstance(uri, str) or not GCS_URI_PATTERN.match(uri):
        raise InvalidGcsUri("gcs_uri must look like gs://bucket/path/file.ext")
    bucket, _, obj = uri[len("gs://"):].partition("/")
    if not _BUCKET.match(bucket) or any(not 1 <= len(p) <= 63 for p in bucket.split(".")) \
            or ".." in bucket:
        raise InvalidGcsUri("gcs_uri has an invalid bucket name")
    if not obj or len(obj.encode("utf-8")) > _MAX_OBJECT_BYTES or "\r" in obj or "\n" in obj:
        raise InvalidGcsUri("gcs_uri has an invalid object name")
    return bucket, obj


def download_url(bucket: str, obj: str, endpoint: str) -> str:
    """JSON-API media URL of one object; the object name is fully percent-encoded."""
    return (f"{endpoint.rstrip('/')}/download/storage/v1/b/{quote(bucket, safe='')}"
            f"/o/{quote(obj, safe='')}?alt=media")


def auth_headers(bearer_token: Optional[str]) -> Dict[str, str]:
    """`Authorization: Bearer ...` for a non-empty token, no header (anonymous) otherwise.

    Raises:
        InvalidRequest: the token is not a single-line string (its value is never reported).
    """
    if bearer_token is None or bearer_token == "":
        return {}
    if not isinstance(bearer_token, str) or "\n" in bearer_token or "\r" in bearer_token:
        raise InvalidRequest("bearer_token must be a single-line string")
    return {"Authorization": f"Bearer {bearer_token.strip()}"}


def fetch_gcs(uri: object, bearer_token: Optional[str], settings: ServingSettings) -> bytes:
    """Bytes of the object at `uri`, within `max_image_bytes` and `fetch_timeout_s`.

    Raises:
        InvalidGcsUri: see `parse_gcs_uri`; InvalidRequest: see `auth_headers`.
        FetchFailed (FetchTimeout, TooManyRedirects ...): HTTP error (401/403/404...), total
            deadline passed, connection failure.
        ImageTooLarge: object larger than `settings.max_image_bytes`.
        InvalidUrl: `settings.gcs_endpoint` is not an http(s) URL (a deploy mistake), or a
            redirect to a URL the SSRF rules refuse (UrlPrivateAddress ...).
    """
    bucket, obj = parse_gcs_uri(uri)
    headers = auth_headers(bearer_token)
    data = fetch_url(download_url(bucket, obj, settings.gcs_endpoint),
                     max_bytes=settings.max_image_bytes, timeout_s=settings.fetch_timeout_s,
                     headers=headers, allow_private=settings.allow_private_urls,
                     max_redirects=settings.max_redirects,
                     trusted_origins=(settings.gcs_endpoint,))
    log.info("gcs object: %d bytes (%s)", len(data), "token" if headers else "anonymous")
    return data
