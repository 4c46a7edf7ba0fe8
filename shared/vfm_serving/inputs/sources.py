"""One image source type for every API: an http(s) URL, base64 / data URL, or a `gs://` object."""

import copy
import dataclasses
from typing import Optional

from vfm_serving.errors import ServingError
from vfm_serving.inputs.base64_data import decode_base64
from vfm_serving.inputs.gcs import fetch_gcs
from vfm_serving.inputs.http_fetch import fetch_url
from vfm_serving.settings import ServingSettings

URL = "url"
BASE64 = "base64"
GCS = "gcs"


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """One image as the client named it.

    kind: URL, BASE64 or GCS. value: the URL / base64 text / gs:// URI, unchecked.
    label: where it sits in the request (e.g. "image_urls[3]"), prefixed to its error messages;
        None when the API reports errors per item instead (Derm).
    bearer_token: GCS only; sent to storage, never in repr, logs or error messages.
    """

    kind: str
    value: object = dataclasses.field(repr=False)
    label: Optional[str] = None
    bearer_token: Optional[str] = dataclasses.field(default=None, repr=False)


def source_bytes(source: ImageSource, settings: ServingSettings) -> bytes:
    """Encoded image bytes of one source, within `max_image_bytes` and `fetch_timeout_s`.

    Raises:
        InvalidBase64, InvalidUrl (and its URL-rule subclasses), InvalidGcsUri, InvalidRequest
        (bad bearer token), FetchFailed, ImageTooLarge.
    """
    if source.kind == URL:
        return fetch_url(source.value, max_bytes=settings.max_image_bytes,  # type: ignore[arg-type]
                         timeout_s=settings.fetch_timeout_s,
                         allow_private=settings.allow_private_urls,
                         max_redirects=settings.max_redirects)
    if source.kind == BASE64:
        return decode_base64(source.value, settings.max_image_bytes)  # type: ignore[arg-type]
    if source.kind == GCS:
        return fetch_gcs(source.value, source.bearer_token, settings)
    raise ValueError(f"unknown source kind {source.kind!r}")


def labelled(error: ServingError, source: ImageSource) -> ServingError:
    """The same error class and code with the source's label prefixed to the message."""
    if source.label is None:
        return error
    relabelled = copy.copy(error)
    relabelled.message = f"{source.label}: {error.message}"
    relabelled.args = (relabelled.message,)
    return relabelled
