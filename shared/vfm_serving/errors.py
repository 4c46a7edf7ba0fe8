"""Typed errors with stable machine-readable codes.

The shared package raises only `ServingError` subclasses for problems it can name. `client_error`
tells whether the caller is at fault (HTTP 4xx / per-instance error) or the server (5xx);
`http_status` is the status a request-level error gets (vfm_serving.http.errors maps it; nothing
else in the shared package knows about HTTP). Codes are part of the public API: never rename one,
add new ones instead.
"""

from typing import Any, Dict


class ServingError(Exception):
    """Base error. `code` is stable; `message` is safe to show (no payloads, no tokens)."""

    code = "serving_error"
    client_error = True
    http_status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_dict(self) -> Dict[str, Any]:
        """JSON body fragment: {"code": ..., "message": ...}."""
        return {"code": self.code, "message": self.message}


class InvalidRequest(ServingError):
    """The request body is not the documented shape (missing/conflicting fields, wrong types)."""

    code = "invalid_request"


class MissingImage(InvalidRequest):
    code = "missing_image"


class ConflictingInputs(InvalidRequest):
    code = "conflicting_inputs"


class UnsupportedTask(InvalidRequest):
    code = "unsupported_task"


class InvalidBatchSize(InvalidRequest):
    code = "invalid_batch_size"


class TooManyImages(InvalidRequest):
    code = "too_many_images"


class InvalidBase64(ServingError):
    code = "invalid_base64"


class InvalidUrl(ServingError):
    """Not an http(s) URL, or a malformed one."""

    code = "invalid_url"


class FetchFailed(ServingError):
    """The URL / object could not be downloaded (status, timeout, connection)."""

    code = "fetch_failed"


class ImageTooLarge(ServingError):
    """Encoded bytes or decoded pixels beyond the configured limits."""

    code = "image_too_large"


class ImageDecodeError(ServingError):
    """Bytes that no image decoder accepts, or a truncated image."""

    code = "image_decode_failed"


class InvalidImageGeometry(ServingError):
    """Image decodes but is too small or too elongated for the configured limits."""

    code = "invalid_image_geometry"


class MediaTypeMismatch(ServingError):
    """Declared media type is unsupported or contradicts the bytes."""

    code = "media_type_mismatch"


class ModelError(ServingError):
    """The model failed on input that passed validation: a server-side problem."""

    code = "model_error"
    client_error = False
    http_status = 500


class InvalidGcsUri(ServingError):
    """A `gcs_uri` that is not `gs://<valid bucket>/<object with an extension>`."""

    code = "invalid_gcs_uri"


class InternalError(ServingError):
    """An unexpected failure while preparing one instance (a bug, not the client's fault)."""

    code = "internal_error"
    client_error = False
    http_status = 500


# --- URL fetching (SSRF guard): which rule refused the URL --------------------------------------
# Subclasses of InvalidUrl / FetchFailed, so code that maps the parent class (Derm's Google
# descriptions) keeps working.


class UrlSchemeNotAllowed(InvalidUrl):
    """A URL (or a redirect target) whose scheme is not http or https."""

    code = "url_scheme_not_allowed"


class UrlCredentialsNotAllowed(InvalidUrl):
    """A URL with a userinfo part (`user:pass@host`, `localhost@127.0.0.1`)."""

    code = "url_credentials_not_allowed"


class UrlPrivateAddress(InvalidUrl):
    """The host is, or resolves to, a loopback/private/link-local/unique-local/multicast/reserved/
    unspecified address (or an IPv4-mapped/6to4/NAT64 form of one), and private URLs are off."""

    code = "url_private_address"


class UrlHostNotFound(FetchFailed):
    """The host name does not resolve (DNS failure)."""

    code = "url_host_not_found"


class TooManyRedirects(FetchFailed):
    """More redirects than `max_redirects`."""

    code = "too_many_redirects"


class FetchTimeout(FetchFailed):
    """The total download deadline (`fetch_timeout_s`: DNS, connect, redirects, body) passed."""

    code = "fetch_timeout"


_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                           "\u2066\u2067\u2068\u2069")


def safe_text(value: object, limit: int = 200) -> str:
    """`value` as a short, printable, always-UTF-8-encodable string for an error message.

    Non-strings go through `repr`. Control characters, lone surrogates, line/paragraph separators
    and bidi overrides become `\\xNN` / `\\uNNNN` escapes; the result is cut to about `limit`
    characters (an ellipsis marks the cut). Never raises.
    """
    import unicodedata

    text = value if isinstance(value, str) else repr(value)
    cut = len(text) > limit
    text = text[:limit]
    out = []
    for ch in text:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in _ESCAPED_CATEGORIES:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out) + ("…" if cut else "")


class RequestTooLarge(InvalidRequest):
    """The request body is longer than `max_request_bytes`."""

    code = "request_too_large"
    http_status = 413


# --- request bodies (vfm_serving.http.body) -----------------------------------------------------


class UnsupportedContentType(InvalidRequest):
    """A Content-Type that is neither JSON nor msgpack (or JSON in a charset other than UTF-8)."""

    code = "unsupported_content_type"
    http_status = 415


class InvalidJson(InvalidRequest):
    """The body is not valid JSON (syntax, empty body, NaN/Infinity)."""

    code = "invalid_json"


class InvalidUtf8(InvalidRequest):
    """The body (or a msgpack string) is not valid UTF-8, or a string holds a lone surrogate."""

    code = "invalid_utf8"


class JsonTooDeep(InvalidRequest):
    """Arrays/objects nested deeper than `max_json_depth`."""

    code = "json_too_deep"


class NumberTooLarge(InvalidRequest):
    """A number literal longer than the digit cap, or one that overflows a double."""

    code = "number_too_large"


class InvalidMsgpack(InvalidRequest):
    """A msgpack body that does not decode, uses extension types, or has non-string map keys."""

    code = "invalid_msgpack"
