"""vfm_serving.http.body.read_body: every body a client can send -> a JSON value or a coded 4xx.

Named cases for each rule, then property tests (hypothesis): arbitrary bytes under every content
type, and arbitrary nested structures (including what JSON cannot hold) as JSON and msgpack, never
raise anything but a ServingError, and whatever is returned encodes as strict UTF-8 JSON.
"""

import json
import math
import time
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfm_serving import errors
from vfm_serving.errors import safe_text
from vfm_serving.http.body import (
    INT_MAX,
    INT_MIN,
    MAX_NUMBER_CHARS,
    check_depth,
    parse_content_type,
    read_body,
)
from vfm_serving.settings import ServingSettings

SETTINGS = ServingSettings(max_request_bytes=1_000_000, max_json_depth=32)
JSON = "application/json"
MSGPACK = "application/octet-stream"


def code_of(raw: bytes, content_type: Any = JSON, settings: ServingSettings = SETTINGS) -> str:
    with pytest.raises(errors.ServingError) as info:
        read_body(raw, content_type, settings)
    assert json.dumps(info.value.to_dict()).encode("utf-8")  # the error body always encodes
    return info.value.code


def encodable(value: Any) -> None:
    """Strict JSON (no NaN) in strict UTF-8, and by orjson (64-bit integers, valid UTF-8): what
    a response echoing the value needs."""
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    orjson.dumps(value)


# --- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "", JSON, "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF8", "text/plain",
                                          "text/json", "application/vnd.api+json",
                                          "application/x-www-form-urlencoded"])
def test_json_content_types(content_type: Any) -> None:
    assert read_body(b'{"a": [1, 2.5, "x", null, true]}', content_type, SETTINGS) == \
        {"a": [1, 2.5, "x", None, True]}


@pytest.mark.parametrize("content_type", [MSGPACK, "application/msgpack", "application/x-msgpack",
                                          "application/vnd.msgpack"])
def test_msgpack_content_types(content_type: str) -> None:
    raw = msgpack.packb({"image_base64": "QUJD", "task": "classification", "batch_size": 4})
    assert read_body(raw, content_type, SETTINGS) == \
        {"image_base64": "QUJD", "task": "classification", "batch_size": 4}


@pytest.mark.parametrize("content_type", ["multipart/form-data; boundary=x", "image/png",
                                          "text/html", "application/xml", "application/cbor",
                                          "application/json; charset=latin-1",
                                          "text/plain; charset=utf-16", "\udcff/x",
                                          "application/json\r\nX: 1; charset=\x00"])
def test_other_content_types_are_415(content_type: str) -> None:
    with pytest.raises(errors.UnsupportedContentType) as info:
        read_body(b"{}", content_type, SETTINGS)
    assert info.value.http_status == 415 and info.value.code == "unsupported_content_type"
    info.value.message.encode("utf-8")


def test_parse_content_type() -> None:
    assert parse_content_type(' Application/JSON ; Charset="UTF-8" ') == ("application/json",
                                                                          "utf-8")
    assert parse_content_type(None) == parse_content_type("  ") == (None, None)


# --- JSON rules ---------------------------------------------------------------------------------


def test_request_too_large() -> None:
    small = ServingSettings(max_request_bytes=11)
    assert read_body(b'{"a": "12"}', JSON, small) == {"a": "12"}
    with pytest.raises(errors.RequestTooLarge) as info:
        read_body(b'{"a": "123"}', JSON, small)
    assert info.value.http_status == 413 and info.value.code == "request_too_large"
    assert code_of(msgpack.packb({"a": "x" * 20}), MSGPACK, small) == "request_too_large"


@pytest.mark.parametrize("raw", [b'{"a": "\xff"}', b'{"a": "\xc3"}', b'\xfe\xff{}',
                                 b'{"a": "\xed\xa0\x80"}',           # encoded surrogate
                                 b'{"a": "\xc0\xaf"}',               # overlong
                                 b'{"\xe9t\xe9": 1}', b'\x80'])
def test_invalid_utf8(raw: bytes) -> None:
    assert code_of(raw) == "invalid_utf8"


@pytest.mark.parametrize("raw", [b'{"a": "\\ud800"}', b'{"\\udfff": 1}', b'["\\ud83d x"]',
                                 b'{"a": [{"b": "\\uDC00"}]}'])
def test_lone_surrogate_escapes(raw: bytes) -> None:
    assert code_of(raw) == "invalid_utf8"


def test_paired_surrogate_escapes_and_bom() -> None:
    assert read_body(b'{"e": "\\ud83d\\ude00"}', JSON, SETTINGS) == {"e": "\U0001F600"}
    assert read_body(b'\xef\xbb\xbf{"a": 1}', JSON, SETTINGS) == {"a": 1}


@pytest.mark.parametrize("raw", [b"", b"   \n", b"{", b'{"a": }', b"{'a': 1}", b"[1, 2,]",
                                 b'{"a": 1} x', b"NaN", b'{"a": NaN}', b'{"a": -Infinity}',
                                 b'{"a": Infinity}', b"\x00", b'"unterminated', b"01",
                                 b'{"a": "tab\tinside"}'])
def test_invalid_json(raw: bytes) -> None:
    assert code_of(raw) == "invalid_json"


def test_depth_cap_is_exact_and_checked_before_parsing() -> None:
    assert read_body(b"[" * 32 + b"]" * 32, JSON, SETTINGS) == \
        json.loads("[" * 32 + "]" * 32)
    assert code_of(b"[" * 33 + b"]" * 33) == "json_too_deep"
    assert code_of(b'{"a":' * 33 + b"1" + b"}" * 33) == "json_too_deep"
    # 100,000 deep: would be a RecursionError in json.loads; refused by the scan, fast.
    started = time.perf_counter()
    assert code_of(b"[" * 100_000) == "json_too_deep"
    assert code_of(b'{"a":' * 100_000) == "json_too_deep"
    assert time.perf_counter() - started < 1.0


def test_brackets_inside_strings_do_not_count() -> None:
    raw = json.dumps({"a": "[" * 1000 + "{" * 1000, "b": ['\\"[[[', '"]]]"']}).encode()
    assert read_body(raw, JSON, SETTINGS)["a"] == "[" * 1000 + "{" * 1000
    check_depth('["\\\\", [["x"]], "\\"[["]', 3)
    with pytest.raises(errors.JsonTooDeep):
        check_depth('["\\\\", [["x"]], "\\"[["]', 2)
    # Many shallow containers are fine however many there are.
    assert len(read_body(json.dumps([[1]] * 5000).encode(), JSON, SETTINGS)) == 5000


def test_numbers() -> None:
    body = read_body(b'{"i": -123, "f": 1.5e300, "z": 0.0, "t": 1e-400, "b": 12345678901234567890}',
                     JSON, SETTINGS)
    assert body == {"i": -123, "f": 1.5e300, "z": 0.0, "t": 0.0, "b": 12345678901234567890}
    edges = [-(2 ** 63), 2 ** 64 - 1, 10 ** 18, -(10 ** 18)]
    assert read_body(json.dumps(edges).encode(), JSON, SETTINGS) == edges
    for raw in (b"[18446744073709551616]", b"[-9223372036854775809]", b"[" + b"9" * 30 + b"]",
                b"[" + b"9" * (MAX_NUMBER_CHARS + 1) + b"]", b"[" + b"1" * 5000 + b"]",
                b'{"a": -' + b"7" * 100_000 + b"}", b"[1e400]", b"[-1e309]",
                b"[" + b"1" * 60 + b"." + b"1" * 60 + b"]", b"[0." + b"0" * 200 + b"1]"):
        assert code_of(raw) == "number_too_large", raw[:20]
    # Long digit runs inside strings are just text.
    assert read_body(b'["' + b"1" * 5000 + b'"]', JSON, SETTINGS) == ["1" * 5000]


def test_duplicate_keys_last_wins() -> None:
    assert read_body(b'{"task": "a", "task": "b"}', JSON, SETTINGS) == {"task": "b"}


# --- msgpack rules ------------------------------------------------------------------------------


def test_msgpack_bin_values_become_base64() -> None:
    raw = msgpack.packb({"image_base64": b"\x89PNG\r\n", "list": [b"", b"\x00"]}, use_bin_type=True)
    assert read_body(raw, MSGPACK, SETTINGS) == {"image_base64": "iVBORw0K", "list": ["", "AA=="]}


@pytest.mark.parametrize("raw,code", [
    (b"", "invalid_msgpack"),
    (b"\xc1", "invalid_msgpack"),                                      # never-used byte
    (msgpack.packb({"a": 1})[:-1], "invalid_msgpack"),                 # truncated
    (msgpack.packb({"a": 1}) + b"\x00", "invalid_msgpack"),            # extra data
    (msgpack.packb(msgpack.ExtType(5, b"xx")), "invalid_msgpack"),     # extension
    (msgpack.packb({"a": msgpack.Timestamp(0)}), "invalid_msgpack"),  # timestamp extension
    (msgpack.packb({1: "int key"}), "invalid_msgpack"),
    (msgpack.packb({b"bytes key": 1}, use_bin_type=True), "invalid_msgpack"),
    (msgpack.packb({"a": float("nan")}), "invalid_msgpack"),
    (msgpack.packb([float("inf")]), "invalid_msgpack"),
    (b"\xa2\xff\xfe", "invalid_utf8"),                                 # str with invalid UTF-8
    (b"\x81\xa2\xed\xa0\x01", "invalid_utf8"),                         # key with bad UTF-8
    (b"\xdd\xff\xff\xff\xff", "invalid_msgpack"),                      # array of 4G items
    (b"\xdb\xff\xff\xff\xff" + b"x" * 10, "invalid_msgpack"),          # str claiming 4 GB
    (b"\x91" * 33 + b"\xc0", "json_too_deep"),
    (b"\x91" * 5000 + b"\xc0", "invalid_msgpack"),                     # past msgpack's own stack
])
def test_invalid_msgpack(raw: bytes, code: str) -> None:
    assert code_of(raw, MSGPACK) == code


def test_msgpack_depth_cap_is_exact() -> None:
    assert read_body(b"\x91" * 32 + b"\xc0", MSGPACK, SETTINGS) == json.loads("[" * 32 + "null" +
                                                                            "]" * 32)


# --- safe_text ----------------------------------------------------------------------------------


def test_safe_text() -> None:
    assert safe_text("plain") == "plain"
    assert safe_text("a\ud800b\x00c\n\u202e") == "a\\ud800b\\x00c\\x0a\\u202e"
    assert safe_text("x" * 500, 10) == "x" * 10 + "…"
    assert safe_text(b"\xff") == "b'\\xff'"
    for value in ("\udcff" * 300, "\u2028", object(), None, 3.5):
        safe_text(value).encode("utf-8")


# --- properties -----------------------------------------------------------------------------------

CONTENT_TYPES = st.sampled_from([None, JSON, MSGPACK, "text/plain", "application/msgpack",
                                 "image/png", "application/json; charset=latin-1"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text()
           | st.binary(max_size=20) | st.integers(min_value=-10**200, max_value=10**200)
           | st.just("\ud800") | st.just("[[[{{{") | st.just(float("nan")))
KEYS = st.text(max_size=8) | st.just("\udfff")
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=30)
FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TIGHT = ServingSettings(max_request_bytes=5_000, max_json_depth=4)


def check(raw: bytes, content_type: Any, body_settings: ServingSettings = TIGHT) -> Any:
    try:
        value = read_body(raw, content_type, body_settings)
    except errors.ServingError as err:
        assert err.client_error and err.http_status in (400, 413, 415)
        json.dumps(err.to_dict(), ensure_ascii=False).encode("utf-8")
        return None
    encodable(value)
    return value


@FUZZ
@given(st.binary(max_size=300), CONTENT_TYPES)
def test_any_bytes_give_a_json_value_or_a_serving_error(raw: bytes, content_type: Any) -> None:
    check(raw, content_type)


@FUZZ
@given(st.text(alphabet=st.sampled_from('[]{}",:\\0123456789.eE+-nulltrfas \ud800\udc00'),
               max_size=200))
def test_json_like_text_gives_a_json_value_or_a_serving_error(text: str) -> None:
    check(text.encode("utf-8", "surrogatepass"), JSON)


@FUZZ
@given(VALUES)
def test_structures_as_json(value: Any) -> None:
    try:
        raw = json.dumps(value, ensure_ascii=True).encode("ascii")
    except TypeError:  # bytes: not JSON
        return
    result = check(raw, JSON, SETTINGS)
    if result is not None and _plain(value):
        assert result == value


@FUZZ
@given(VALUES)
def test_structures_as_msgpack(value: Any) -> None:
    try:
        raw = msgpack.packb(value, use_bin_type=True, unicode_errors="surrogatepass")
    except (OverflowError, ValueError, UnicodeEncodeError):
        return  # not representable in msgpack at all (ints beyond 64 bits)
    check(raw, MSGPACK, SETTINGS)


def _plain(value: Any) -> bool:
    """True when `value` holds nothing read_body refuses or converts (a round trip is exact)."""
    if isinstance(value, float):
        return math.isfinite(value) and len(repr(value)) <= MAX_NUMBER_CHARS
    if isinstance(value, int) and not isinstance(value, bool):
        return INT_MIN <= value <= INT_MAX
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return not isinstance(value, bytes)
