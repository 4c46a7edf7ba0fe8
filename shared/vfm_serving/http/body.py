"""Raw request body -> a JSON value, for any bytes a client may send: never a 5xx.

`read_body(raw, content_type, settings)` is the first stage of every request. It returns a value
made only of dict (str keys), list, str, int, float (finite), bool and None, so every later stage
and every error message can encode it, or raises a ServingError subclass with a stable code:

- JSON, strict UTF-8 (a leading BOM is skipped; a `charset` other than UTF-8 -> 415): no
  content type, `application/json`, `application/*+json`, `text/plain`, `text/json`, and
  `application/x-www-form-urlencoded` (what `curl -d` sends without `-H`).
- msgpack (what Truss clients send): `application/octet-stream`, `application/msgpack`,
  `application/x-msgpack`, `application/vnd.msgpack`.
- anything else: refused, 415 `unsupported_content_type`.

Limits: `settings.max_request_bytes` (413 `request_too_large`), nesting deeper than
`settings.max_json_depth` (`json_too_deep`, found by a scan of the text *before* the JSON parser
recurses), number literals longer than `MAX_NUMBER_CHARS`, integers outside the 64-bit range
(`INT_MIN`..`INT_MAX`, what msgpack and orjson can carry) or floats overflowing a double
(`number_too_large`), NaN/Infinity refused. Duplicate object keys: the last one wins (as `json`).
Strings must be valid Unicode: a `\\ud800` escape without its pair is `invalid_utf8`.

msgpack specifics: string map keys only, no extension types (timestamps included), no NaN or
infinite floats (`invalid_msgpack`). A binary (`bin`) value becomes its standard base64 text, so
a msgpack client can send raw image bytes in any base64 image field (`image_base64`,
`input_bytes`, SAFE's `data`).
"""

import base64
import json
import math
import re
from typing import Any, List, Optional, Tuple

import msgpack
import numpy as np

from vfm_serving.errors import (
    InvalidJson,
    InvalidMsgpack,
    InvalidUtf8,
    JsonTooDeep,
    NumberTooLarge,
    RequestTooLarge,
    UnsupportedContentType,
    safe_text,
)
from vfm_serving.settings import ServingSettings

# Longest number literal accepted (sign, digits, point, exponent). A double has 17 significant
# digits; 100 characters leave room for any honest value and keep int() parsing trivially cheap.
MAX_NUMBER_CHARS = 100
# Integers a response can echo: int64 .. uint64 (orjson's and msgpack's range).
INT_MIN, INT_MAX = -(2 ** 63), 2 ** 64 - 1

JSON_TYPES = frozenset({"application/json", "text/json", "text/plain",
                        "application/x-www-form-urlencoded"})
MSGPACK_TYPES = frozenset({"application/octet-stream", "application/msgpack",
                           "application/x-msgpack", "application/vnd.msgpack"})
_UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_BOM = b"\xef\xbb\xbf"
# Each match consumes strings (terminated or running to the end) and other text up to the next
# structural bracket, which is the group: brackets inside strings never count. Atomic groups and
# possessive quantifiers: linear time, no backtracking.
_BRACKETS = re.compile(r'(?>"[^"\\]*+(?:\\.[^"\\]*+)*+"?|[^"\[\]{}]++)*+([\[\]{}])', re.DOTALL)
_DEPTH_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as int8: +1, +1, -1, -1
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# 19+ digit runs may leave the 64-bit range: only then do integers go through the checking hook.
# Found with a translate + substring search (C speed; a `[0-9]{19,}` regex has no literal prefix
# and scans a 35 MB base64 body at ~80 MB/s).
LONG_DIGIT_RUN = 19
_DIGITS_TO_ONE = bytes(0x31 if 0x30 <= byte <= 0x39 else 0x30 for byte in range(256))
_DIGIT_RUN = b"1" * LONG_DIGIT_RUN


def read_body(raw: bytes, content_type: Optional[str], settings: ServingSettings) -> Any:
    """Decode a request body (JSON or msgpack by `content_type`) within the limits.

    Args:
        raw: the body bytes as received.
        content_type: the request's Content-Type header value, or None.

    Returns:
        A JSON value: dict (str keys) / list / str / int / float / bool / None.

    Raises:
        RequestTooLarge (413): more than `settings.max_request_bytes`.
        UnsupportedContentType (415): not a JSON or msgpack media type / charset.
        InvalidUtf8, InvalidJson, JsonTooDeep, NumberTooLarge, InvalidMsgpack (400).
    """
    if len(raw) > settings.max_request_bytes:
        raise RequestTooLarge(f"request body is {len(raw)} bytes; the limit is "
                              f"{settings.max_request_bytes}")
    media_type, charset = parse_content_type(content_type)
    if media_type in MSGPACK_TYPES:
        return _read_msgpack(raw, settings.max_json_depth)
    if media_type is None or media_type in JSON_TYPES or (
            media_type.startswith("application/") and media_type.endswith("+json")):
        if charset is not None and charset not in _UTF8_CHARSETS:
            raise UnsupportedContentType(f"JSON bodies must be UTF-8, not charset "
                                         f"{safe_text(charset, 40)!r}")
        return _read_json(raw, settings.max_json_depth)
    raise UnsupportedContentType(
        f"content type {safe_text(media_type, 80)!r} is not supported: send application/json "
        "(or msgpack as application/octet-stream)")


def parse_content_type(content_type: Optional[str]) -> Tuple[Optional[str], Optional[str]]:
    """`"Application/JSON; charset=UTF-8"` -> ("application/json", "utf-8"); None -> both None."""
    if content_type is None or not content_type.strip():
        return None, None
    media_type, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return media_type.strip().lower() or None, charset


# --- JSON ----------------------------------------------------------------------------------------


def _read_json(raw: bytes, max_depth: int) -> Any:
    """Strict UTF-8 JSON: the depth scan first, then the C parser with cheap number guards.

    Fast paths keep a typical body at `json.loads` speed: integers go through the C parser
    unless the text has a digit run of 19+ digits (then a range-checking hook runs);
    the string walk for lone surrogates runs only when the text has a `\\uD8..`-`\\uDF..` escape.
    """
    if raw.startswith(_BOM):
        raw = raw[len(_BOM):]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidUtf8(f"request body is not valid UTF-8 (byte {exc.start})") from None
    if not text.strip():
        raise InvalidJson("request body is empty: send a JSON object")
    check_depth(text, max_depth)
    hooks = {"parse_float": _parse_float, "parse_constant": _reject_constant}
    if has_long_digit_run(raw):
        hooks["parse_int"] = _parse_int
    try:
        value = json.loads(text, **hooks)  # type: ignore[arg-type]
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"request body is not valid JSON: {exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}") from None
    except RecursionError:  # unreachable after check_depth; kept so no body can crash a worker
        raise JsonTooDeep("request body is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(text):
        value = _checked(value, max_depth, from_msgpack=False)
    return value


def has_long_digit_run(raw: bytes) -> bool:
    """True if `raw` has `LONG_DIGIT_RUN` or more ASCII digits in a row (anywhere, even in
    strings: a cheap over-approximation that only decides whether the checking hook runs)."""
    return _DIGIT_RUN in raw.translate(_DIGITS_TO_ONE)


def check_depth(text: str, max_depth: int) -> None:
    """Refuse JSON text whose arrays/objects nest deeper than `max_depth` (brackets inside
    strings do not count). Linear time, no recursion.

    Raises:
        JsonTooDeep.
    """
    if text.count("[") + text.count("{") <= max_depth:
        return
    brackets = "".join(_BRACKETS.findall(text)).encode("ascii")
    steps = np.frombuffer(brackets.translate(_DEPTH_STEPS), dtype=np.int8)
    # Running depth; where it would go negative the JSON parser has already stopped with an
    # error, so the maximum over the whole text is what a parser could reach.
    if steps.size and int(np.cumsum(steps, dtype=np.int64).max()) > max_depth:
        raise JsonTooDeep(f"request body nests arrays/objects deeper than {max_depth} levels")


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise NumberTooLarge(f"a number in the request has {len(literal)} characters; the limit "
                             f"is {MAX_NUMBER_CHARS}")
    value = int(literal)
    if not INT_MIN <= value <= INT_MAX:
        raise NumberTooLarge(f"integer {literal} is outside the 64-bit range")
    return value


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise NumberTooLarge(f"a number in the request has {len(literal)} characters; the limit "
                             f"is {MAX_NUMBER_CHARS}")
    value = float(literal)
    if not math.isfinite(value):
        raise NumberTooLarge(f"number {literal} overflows a double")
    return value


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not valid JSON (numbers must be finite)")


# --- msgpack -------------------------------------------------------------------------------------


def _reject_ext(code: int, data: bytes) -> Any:
    raise InvalidMsgpack(f"msgpack extension type {code} is not supported")


def _read_msgpack(raw: bytes, max_depth: int) -> Any:
    """msgpack -> JSON value (strings strict UTF-8, lengths bounded by the body size)."""
    if not raw:
        raise InvalidMsgpack("request body is empty")
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=True, use_list=True,
                                ext_hook=_reject_ext)
    except UnicodeDecodeError as exc:
        raise InvalidUtf8(f"a msgpack string is not valid UTF-8 (byte {exc.start} of the "
                          "string)") from None
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise InvalidMsgpack(f"request body is not valid msgpack ({type(exc).__name__}: "
                             f"{safe_text(str(exc), 100)})") from None
    return _checked(value, max_depth, from_msgpack=True)


# --- the value is JSON-representable -------------------------------------------------------------


def _checked(value: Any, max_depth: int, *, from_msgpack: bool) -> Any:
    """`value` with bin values as base64 text (msgpack), after checking, without recursion, that
    it is a JSON value: str keys, no lone surrogates, finite floats, depth <= `max_depth`.

    Raises:
        JsonTooDeep, InvalidUtf8, InvalidMsgpack (non-JSON types from msgpack), NumberTooLarge.
    """
    value = _leaf(value, from_msgpack)
    stack: List[Tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        if not isinstance(container, (dict, list)):
            continue
        if depth > max_depth:
            raise JsonTooDeep(f"request body nests arrays/objects deeper than {max_depth} levels")
        if isinstance(container, dict):
            for key in container:
                if not isinstance(key, str):
                    raise InvalidMsgpack(f"map keys must be strings, not {type(key).__name__}")
                _check_text(key)
            for key, item in container.items():
                if not isinstance(item, (dict, list)):
                    container[key] = _leaf(item, from_msgpack)
                else:
                    stack.append((item, depth + 1))
        else:
            for index, item in enumerate(container):
                if not isinstance(item, (dict, list)):
                    container[index] = _leaf(item, from_msgpack)
                else:
                    stack.append((item, depth + 1))
    return value


def _leaf(value: Any, from_msgpack: bool) -> Any:
    """A scalar checked (and bin -> base64 str); containers pass through."""
    if value is None or isinstance(value, (bool, int, dict, list)):
        return value
    if isinstance(value, str):
        _check_text(value)
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMsgpack("NaN and infinite numbers are not allowed")
        return value
    if from_msgpack and isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise InvalidMsgpack(f"msgpack value of type {type(value).__name__} is not supported")


def _check_text(text: str) -> None:
    if not text.isascii() and _SURROGATE.search(text):
        raise InvalidUtf8("a string in the request holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
