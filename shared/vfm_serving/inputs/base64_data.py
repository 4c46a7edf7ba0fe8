"""Base64 and data-URL decoding, in the forms people send.

Accepted: standard (`+/`) or URL-safe (`-_`) alphabet, with or without `=` padding, whitespace
anywhere (line-wrapped MIME output), raw or as a `data:<type>[;params];base64,` URL.
Refused: any other character, padding in the middle, a length no padding can complete.
"""

import base64
import binascii
import re
from typing import Optional, Tuple

import pybase64

from vfm_serving.errors import ImageTooLarge, InvalidBase64

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)"
                       r";base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_URL_SAFE = str.maketrans("-_", "+/")


def split_data_url(text: str) -> Tuple[Optional[str], str]:
    """Split `data:image/png;base64,AAAA` into ("image/png", "AAAA"); plain base64 -> (None, text).

    Raises:
        InvalidBase64: a `data:` URL that is not base64-encoded.
    """
    if not text[:5].lower() == "data:":
        return None, text
    match = _DATA_URL.match(text)
    if match is None:
        raise InvalidBase64("data URL must look like data:<type>;base64,<payload>")
    return (match.group("mime") or None), text[match.end():]


def decode_base64(text: str, max_bytes: int) -> bytes:
    """Decode base64 (standard or URL-safe alphabet, padded or not, whitespace tolerated), or a
    base64 data URL.

    Raises:
        InvalidBase64: not a string, empty, or not valid base64.
        ImageTooLarge: decoded payload longer than `max_bytes`.
    """
    if not isinstance(text, str):
        raise InvalidBase64(f"base64 image must be a string, got {type(text).__name__}")
    _, payload = split_data_url(text.strip())
    data = _decode_canonical(payload)
    if data is None:
        data = _decode_tolerant(payload, max_bytes)
    if len(data) > max_bytes:
        raise ImageTooLarge(f"encoded image is larger than the limit of {max_bytes} bytes")
    if not data:
        raise InvalidBase64("base64 image decodes to zero bytes")
    return data


def _decode_canonical(payload: str) -> Optional[bytes]:
    """The fast path for what nearly every client sends: padded standard base64 with no
    whitespace, decoded by pybase64's strict SIMD decoder (no regex pass, no copies; 4 MB in
    well under a millisecond, where binascii takes ~10 ms holding the GIL).

    Returns:
        The bytes, or None when `payload` is not in that form (the tolerant path decides).
    """
    if not payload or not payload.isascii():
        return None
    try:
        return pybase64.b64decode(payload, validate=True)
    except binascii.Error:
        return None


def _decode_tolerant(payload: str, max_bytes: int) -> bytes:
    """Whitespace anywhere, URL-safe alphabet, missing padding.

    Raises:
        InvalidBase64, ImageTooLarge.
    """
    payload = _WHITESPACE.sub("", payload)
    if not payload:
        raise InvalidBase64("base64 image is empty")
    # 4 base64 chars carry 3 bytes: reject before allocating the decoded copy.
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise ImageTooLarge(f"encoded image is larger than the limit of {max_bytes} bytes")
    payload = payload.translate(_URL_SAFE)
    unpadded = payload.rstrip("=")
    if len(unpadded) % 4 == 1 or len(payload) - len(unpadded) > 2:
        raise InvalidBase64("image is not valid base64: its length fits no padding")
    try:
        data = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"image is not valid base64: {exc}") from None
    return data
