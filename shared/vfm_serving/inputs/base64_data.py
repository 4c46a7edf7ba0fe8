"""Base64 and data-URL decoding."""

import base64
import binascii
import re
from typing import Optional, Tuple

from vfm_serving.errors import ImageTooLarge, InvalidBase64

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*);base64,",
                       re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


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
    """Decode standard base64 (whitespace tolerated, padding required), or a base64 data URL.

    Raises:
        InvalidBase64: not a string, empty, or not valid base64.
        ImageTooLarge: decoded payload longer than `max_bytes`.
    """
    if not isinstance(text, str):
        raise InvalidBase64(f"base64 image must be a string, got {type(text).__name__}")
    _, payload = split_data_url(text.strip())
    payload = _WHITESPACE.sub("", payload)
    if not payload:
        raise InvalidBase64("base64 image is empty")
    # 4 base64 chars carry 3 bytes: reject before allocating the decoded copy.
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise ImageTooLarge(f"encoded image is larger than the limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidBase64(f"image is not valid base64: {exc}") from None
    if len(data) > max_bytes:
        raise ImageTooLarge(f"encoded image is larger than the limit of {max_bytes} bytes")
    if not data:
        raise InvalidBase64("base64 image decodes to zero bytes")
    return data
