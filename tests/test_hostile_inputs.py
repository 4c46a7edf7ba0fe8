"""Hostile inputs through the three real Truss servers on 127.0.0.1 (issue 9).

For each API (Midnight, Derm, SAFE), >= 40 cases of what the internet sends: malformed and huge
JSON, invalid UTF-8, deep nesting, huge numbers, msgpack bodies good and bad, other content types,
tiny/huge/elongated images, corrupt and truncated files, decompression bombs, oversize base64,
wrong media types and every SSRF form on loopback. Each case asserts the exact status and error
code. Before and after the barrage a known-good request is answered with the same numbers, the
readiness probe (a golden inference) is green, nothing was answered 5xx, and no SSRF target saw a
connection. A short soak (tools.soak: 4 clients, 10 s, good and bad requests mixed) ends each
server's run.

Servers run with VFM_ALLOW_PRIVATE_URLS=0 (the production default), unlike the other API tests.
"""

import base64
import functools
import io
import json
import struct
import zlib
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional

import msgpack
import numpy as np
import pytest
import requests
from PIL import Image

from images_for_tests import encode, photo, separate_planes_tiff
from test_fetch_ssrf import RecordingServer, ok, redirect_to, send, trickle_body
from tools import soak

JSON = "application/json"
MSGPACK = "application/msgpack"
MAX_REQUEST_BYTES = 6_000_000
MAX_IMAGE_BYTES = 2_000_000
COMMON_ENV = {"VFM_ALLOW_PRIVATE_URLS": "0", "VFM_FETCH_TIMEOUT_S": "2",
              "VFM_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
              "VFM_MAX_IMAGE_BYTES": str(MAX_IMAGE_BYTES), "VFM_MAX_IMAGES_PER_REQUEST": "8"}


class Case(NamedTuple):
    name: str
    body: bytes
    status: int
    code: Optional[str] = None                     # the error code of a 4xx / of an instance
    content_type: Optional[str] = JSON
    check: Optional[Callable[[Any], None]] = None  # more assertions on a 200 body


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# --- images ------------------------------------------------------------------------------------


def png(size=(256, 256), name="astronaut") -> bytes:
    return encode(photo(name, size), "PNG")


def jpeg(size=(256, 256), name="coffee", **kwargs: Any) -> bytes:
    return encode(photo(name, size), "JPEG", **kwargs)


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_bomb(width: int = 50_000, height: int = 50_000) -> bytes:
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                              0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def png_zlib_bomb(side: int = 10_000) -> bytes:
    """A real, complete greyscale PNG of side x side black pixels: ~100 KB for 100 MP."""
    rows = zlib.compressobj(9)
    row = b"\0" * (side + 1)
    data = b"".join(rows.compress(row) for _ in range(side)) + rows.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0,
                                                              0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def gif_header_bomb(side: int = 30_000) -> bytes:
    """A real 8x8 GIF whose logical screen claims side x side."""
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", side, side)
    return bytes(data)


def mpo() -> bytes:
    buf = io.BytesIO()
    photo("astronaut", (200, 150)).save(buf, "MPO", save_all=True,
                                        append_images=[photo("rocket", (200, 150))])
    return buf.getvalue()


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (64, 48), c) for c in ((200, 0, 0), (0, 200, 0))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)


def sixteen_bit_png() -> bytes:
    values = (np.asarray(photo("camera", (120, 90)).convert("L"), np.uint16) * 257)
    return encode(Image.fromarray(values), "PNG")


def separate_planes_tiff16() -> bytes:
    """GOOD_PNG's pixels as a 16-bit RGB TIFF with a plane per channel (v * 257: top 8 bits = v),
    the layout Pillow 13 alone decodes wrongly."""
    planes = np.moveaxis(np.asarray(photo("astronaut", (256, 256)), np.uint16) * 257, -1, 0)
    return separate_planes_tiff(planes, photometric="rgb")


def cmyk_jpeg() -> bytes:
    return encode(photo("chelsea", (160, 120)).convert("CMYK"), "JPEG")


def rgba_png() -> bytes:
    array = np.asarray(photo("coffee", (100, 80)).convert("RGBA")).copy()
    array[..., 3] = np.arange(100, dtype=np.uint8)[None, :] * 2
    return encode(Image.fromarray(array), "PNG")


GOOD_PNG = png()
NOT_IMAGE = b"this is not an image at all, just text" * 10


# --- body-level cases every API gets (they fail before the API looks at the body) ---------------


def body_cases(good: Dict[str, Any], msgpack_good: Any, ignores_unknown_fields: bool
               ) -> List[Case]:
    """Malformed bodies, plus the good request in forms that must be accepted. Derm and SAFE
    ignore unknown top-level fields (Vertex, the challenge); Midnight refuses them."""
    good_json = js(good)
    huge_field = js({**good, "padding": "x" * (MAX_REQUEST_BYTES - len(good_json) - 100)})
    return [
        Case("empty body", b"", 400, "invalid_json"),
        Case("whitespace body", b" \n\t ", 400, "invalid_json"),
        Case("truncated json", good_json[: len(good_json) // 2], 400, "invalid_json"),
        Case("trailing garbage", good_json + b" }", 400, "invalid_json"),
        Case("single quotes", b"{'a': 1}", 400, "invalid_json"),
        Case("NaN", b'{"a": NaN}', 400, "invalid_json"),
        Case("Infinity", b"[Infinity]", 400, "invalid_json"),
        Case("invalid utf-8", b'{"a": "\xff\xfe"}', 400, "invalid_utf8"),
        Case("utf-16 body", '{"a": 1}'.encode("utf-16"), 400, "invalid_utf8"),
        Case("encoded surrogate", b'{"a": "\xed\xa0\x80"}', 400, "invalid_utf8"),
        Case("lone surrogate escape in a value", b'{"a": "\\ud800"}', 400, "invalid_utf8"),
        Case("lone surrogate escape in a key", b'{"\\udc00": 1}', 400, "invalid_utf8"),
        Case("nesting 33 deep", b"[" * 33 + b"]" * 33, 400, "json_too_deep"),
        Case("nesting 10,000 deep", b"[" * 10_000 + b"]" * 10_000, 400, "json_too_deep"),
        Case("objects nested 100,000 deep", b'{"a":' * 100_000, 400, "json_too_deep"),
        Case("5,000-digit integer", b'{"a": ' + b"9" * 5000 + b"}", 400, "number_too_large"),
        Case("exponent overflow", b'{"a": 1e999}', 400, "number_too_large"),
        Case("body too large", huge_field + b" " * 2000, 413, "request_too_large"),
        Case("huge but within the cap", huge_field, *((200, None) if ignores_unknown_fields
                                                      else (400, "invalid_request"))),
        Case("text/html", good_json, 415, "unsupported_content_type", "text/html"),
        Case("multipart", good_json, 415, "unsupported_content_type",
             "multipart/form-data; boundary=x"),
        Case("image/png body", GOOD_PNG, 415, "unsupported_content_type", "image/png"),
        Case("json in latin-1", good_json, 415, "unsupported_content_type",
             "application/json; charset=latin-1"),
        Case("msgpack bad extension", msgpack.packb(msgpack.ExtType(42, b"boom")), 400,
             "invalid_msgpack", MSGPACK),
        Case("msgpack timestamp", msgpack.packb({"t": msgpack.Timestamp(1)}), 400,
             "invalid_msgpack", "application/octet-stream"),
        Case("msgpack truncated", msgpack.packb(msgpack_good)[:-3], 400, "invalid_msgpack",
             MSGPACK),
        Case("msgpack int keys", msgpack.packb({1: 2}), 400, "invalid_msgpack", MSGPACK),
        Case("msgpack invalid utf-8 string", b"\x81\xa1a\xa2\xff\xfe", 400, "invalid_utf8",
             MSGPACK),
        Case("msgpack claims 4 G items", b"\xdd\xff\xff\xff\xff", 400, "invalid_msgpack",
             MSGPACK),
        Case("msgpack nested 100 deep", b"\x91" * 100 + b"\xc0", 400, "json_too_deep", MSGPACK),
        Case("body is a list", b"[1, 2]", 400, "invalid_request"),
        Case("body is a string", b'"image"', 400, "invalid_request"),
        Case("body is null", b"null", 400, "invalid_request"),
        Case("good request, no content type", good_json, 200, content_type=None),
        Case("good request as text/plain", good_json, 200, content_type="text/plain"),
        Case("good request as curl -d sends it", good_json, 200,
             content_type="application/x-www-form-urlencoded"),
        Case("good request with a BOM", b"\xef\xbb\xbf" + good_json, 200),
        Case("good request in msgpack", msgpack.packb(msgpack_good), 200, content_type=MSGPACK),
    ]


# --- the servers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ssrf_target() -> Iterator[RecordingServer]:
    """A loopback server every SSRF case points at; it must never see a connection."""
    server = RecordingServer()
    server.routes["/img.png"] = lambda h: send(h, 200, GOOD_PNG, {"Content-Type": "image/png"})
    yield server
    server.close()


@pytest.fixture(scope="module")
def gcs() -> Iterator[Dict[str, RecordingServer]]:
    """A GCS stand-in on loopback (the configured endpoint: trusted) and a second loopback
    server its redirect points at (not trusted: must never see a connection)."""
    endpoint, elsewhere = RecordingServer(), RecordingServer()
    elsewhere.routes["/x.png"] = ok
    prefix = "/download/storage/v1/b/bkt/o/"
    endpoint.routes[prefix + "good.png"] = lambda h: send(h, 200, GOOD_PNG)
    endpoint.routes[prefix + "not-image.png"] = lambda h: send(h, 200, NOT_IMAGE)
    endpoint.routes[prefix + "big.png"] = lambda h: send(h, 200, b"\0" * (MAX_IMAGE_BYTES + 1))
    endpoint.routes[prefix + "slow.png"] = trickle_body
    endpoint.routes[prefix + "moved.png"] = redirect_to(f"{elsewhere.base}/x.png")
    endpoint.routes[prefix + "forbidden.png"] = lambda h: send(h, 403, b"denied")
    yield {"endpoint": endpoint, "elsewhere": elsewhere}
    endpoint.close()
    elsewhere.close()


class Served(NamedTuple):
    server: Any               # tools.local_server.LocalTruss
    reference: Any            # the known-good request's answer before the barrage


def post(server: Any, case: Case, timeout: float = 120) -> requests.Response:
    headers = {} if case.content_type is None else {"Content-Type": case.content_type}
    return requests.post(server.predict_url, data=case.body, headers=headers, timeout=timeout)


def run_case(server: Any, case: Case) -> Any:
    response = post(server, case)
    assert response.status_code == case.status, (case.name, response.status_code,
                                                 response.text[:500])
    body = response.json()  # every answer is JSON, errors included
    if case.status != 200:
        assert body["error"]["code"] == case.code, (case.name, body)
        body["error"]["message"].encode("utf-8")
    elif case.check is not None:
        case.check(body)
    return body


def healthy_and_same(served: Served, good: Dict[str, Any], extract: Callable[[Any], Any]) -> None:
    server = served.server
    assert server.process.poll() is None, "the server died"
    assert requests.get(f"{server.url}/v1/models/model", timeout=60).status_code == 200
    again = run_case(server, Case("known-good request", js(good), 200))
    np.testing.assert_array_equal(np.asarray(extract(again)), np.asarray(served.reference))
    logs = server.logs()
    assert "Traceback" not in logs and "Internal Server Error" not in logs, logs[-3000:]


def soak_briefly(truss: str, server: Any) -> None:
    probes = soak.workload(truss)
    soak.calibrate(truss, server.url, probes)
    result = soak.run_soak(truss, server.url, probes, clients=4, seconds=10,
                           pid=server.process.pid, timeout=30)
    assert result["requests"] > 0
    assert result["server_errors_5xx"] == 0 and result["mismatches"] == 0, result
    assert result["transport_failures"] == 0, result


# === Midnight ==================================================================================

MIDNIGHT_GOOD = {"image_base64": b64(GOOD_PNG)}


def midnight_embeddings(body: Any) -> Any:
    return body["embeddings"]


def shape(expected: List[int]) -> Callable[[Any], None]:
    def check(body: Any) -> None:
        assert body["embedding_shape"] == expected
        assert np.isfinite(np.asarray(body["embeddings"], dtype=np.float64)).all()
    return check


def same_as_reference(body: Any) -> None:
    np.testing.assert_array_equal(np.asarray(body["embeddings"]),
                                  np.asarray(MIDNIGHT_REFERENCE["embeddings"]))


MIDNIGHT_REFERENCE: Dict[str, Any] = {}

SSRF_URLS = [
    ("127.0.0.1", "http://127.0.0.1:{p}/img.png", "url_private_address"),
    ("localhost", "http://localhost:{p}/img.png", "url_private_address"),
    ("LOCALHOST.", "http://LOCALHOST.:{p}/img.png", "url_private_address"),
    ("0.0.0.0", "http://0.0.0.0:{p}/img.png", "url_private_address"),
    ("[::1]", "http://[::1]:{p}/img.png", "url_private_address"),
    ("[::]", "http://[::]:{p}/img.png", "url_private_address"),
    ("127.0.0.2", "http://127.0.0.2:{p}/img.png", "url_private_address"),
    ("127.1", "http://127.1:{p}/img.png", "url_private_address"),
    ("decimal", "http://2130706433:{p}/img.png", "url_private_address"),
    ("hex dotted", "http://0x7f.1:{p}/img.png", "url_private_address"),
    ("hex", "http://0x7f000001:{p}/img.png", "url_private_address"),
    ("octal", "http://0177.0.0.1:{p}/img.png", "url_private_address"),
    ("IPv4-mapped", "http://[::ffff:127.0.0.1]:{p}/img.png", "url_private_address"),
    ("NAT64 metadata", "http://[64:ff9b::a9fe:a9fe]/latest/meta-data", "url_private_address"),
    ("6to4 loopback", "http://[2002:7f00:1::]:{p}/img.png", "url_private_address"),
    ("metadata service", "http://169.254.169.254/latest/meta-data/", "url_private_address"),
    ("10/8", "http://10.0.0.1/img.png", "url_private_address"),
    ("192.168/16", "http://192.168.1.1/img.png", "url_private_address"),
    ("CGNAT", "http://100.64.0.1/img.png", "url_private_address"),
    ("unique-local v6", "http://[fd00::1]/img.png", "url_private_address"),
    ("userinfo trick", "http://localhost@127.0.0.1:{p}/img.png", "url_credentials_not_allowed"),
    ("user:password", "http://user:pw@127.0.0.1:{p}/img.png", "url_credentials_not_allowed"),
    ("file scheme", "file:///etc/passwd", "url_scheme_not_allowed"),
    ("ftp scheme", "ftp://127.0.0.1:{p}/img.png", "url_scheme_not_allowed"),
    ("gopher scheme", "gopher://127.0.0.1:{p}/_GET%20/", "url_scheme_not_allowed"),
    ("zone id", "http://[fe80::1%25lo]:{p}/img.png", "invalid_url"),
    ("CRLF injection", "http://127.0.0.1:{p}/img.png\r\nHost: evil", "invalid_url"),
    ("no host", "http:///img.png", "invalid_url"),
    ("unresolvable host", "http://no-such-host.invalid/img.png", "url_host_not_found"),
]


def midnight_cases(ssrf_port: int) -> List[Case]:
    big = jpeg((2048, 2048), "astronaut", quality=85)
    half_png, half_jpeg = GOOD_PNG[: len(GOOD_PNG) // 2], jpeg()[:2000]
    cases = [
        *body_cases(MIDNIGHT_GOOD, {"image_base64": GOOD_PNG}, ignores_unknown_fields=False),
        Case("1x1 PNG", js({"image_base64": b64(png((1, 1)))}), 200, check=shape([1, 64])),
        Case("2048x2048 JPEG", js({"image_base64": b64(big)}), 200, check=shape([1, 64])),
        Case("1000x50 PNG", js({"image_base64": b64(png((1000, 50)))}), 200,
             check=shape([1, 64])),
        Case("5000x4 PNG (aspect 1250)", js({"image_base64": b64(png((5000, 4)))}), 400,
             "invalid_image_geometry"),
        Case("MPO camera file", js({"image_base64": b64(mpo())}), 200, check=shape([1, 64])),
        Case("CMYK JPEG", js({"image_base64": b64(cmyk_jpeg())}), 200, check=shape([1, 64])),
        Case("16-bit PNG", js({"image_base64": b64(sixteen_bit_png())}), 200,
             check=shape([1, 64])),
        Case("16-bit TIFF, a plane per channel",
             js({"image_base64": b64(separate_planes_tiff16())}), 200, check=same_as_reference),
        Case("RGBA PNG", js({"image_base64": b64(rgba_png())}), 200, check=shape([1, 64])),
        Case("animated GIF", js({"image_base64": b64(animated_gif())}), 200,
             check=shape([1, 64])),
        Case("URL-safe unpadded base64",
             js({"image_base64": base64.urlsafe_b64encode(GOOD_PNG).decode().rstrip("=")}), 200,
             check=same_as_reference),
        Case("not an image", js({"image_base64": b64(NOT_IMAGE)}), 400, "image_decode_failed"),
        Case("truncated PNG", js({"image_base64": b64(half_png)}), 400, "image_decode_failed"),
        Case("JPEG header only", js({"image_base64": b64(half_jpeg[:600])}), 400,
             "image_decode_failed"),
        Case("PNG header bomb 50000x50000", js({"image_base64": b64(png_header_bomb())}), 400,
             "image_too_large"),
        Case("PNG zlib bomb 10000x10000", js({"image_base64": b64(png_zlib_bomb())}), 400,
             "image_too_large"),
        Case("GIF header bomb 30000x30000 (past Pillow's own guard)",
             js({"image_base64": b64(gif_header_bomb())}), 400, "image_too_large"),
        Case("GIF header bomb 7000x7000", js({"image_base64": b64(gif_header_bomb(7000))}), 400,
             "image_too_large"),
        Case("oversize base64", js({"image_base64": b64(b"\0" * (MAX_IMAGE_BYTES + 10))}), 400,
             "image_too_large"),
        Case("empty base64", js({"image_base64": ""}), 400, "invalid_base64"),
        Case("not base64", js({"image_base64": "@@@ not base64 @@@"}), 400, "invalid_base64"),
        Case("data URL not base64", js({"image_base64": "data:text/plain,hello"}), 400,
             "invalid_base64"),
        Case("base64 of a number", js({"image_base64": 12345}), 400, "invalid_request"),
        Case("second image of a list broken",
             js({"image_base64_list": [b64(GOOD_PNG), "@@@"]}), 400, "invalid_base64"),
        Case("nine images (limit 8)", js({"image_base64_list": [b64(png((8, 8)))] * 9}), 400,
             "too_many_images"),
        Case("empty list", js({"image_base64_list": []}), 400, "invalid_request"),
        Case("list of numbers", js({"image_urls": [1, 2]}), 400, "invalid_request"),
        Case("two image fields", js({**MIDNIGHT_GOOD, "image_url": "http://x/a.png"}), 400,
             "conflicting_inputs"),
        Case("no image field", js({"task": "classification"}), 400, "missing_image"),
        Case("unknown task", js({**MIDNIGHT_GOOD, "task": "detect"}), 400, "unsupported_task"),
        Case("batch_size 0", js({**MIDNIGHT_GOOD, "batch_size": 0}), 400, "invalid_batch_size"),
        Case("batch_size string", js({**MIDNIGHT_GOOD, "batch_size": "4"}), 400,
             "invalid_batch_size"),
        Case("batch_size 10**15 is lowered", js({**MIDNIGHT_GOOD, "batch_size": 10**15}), 200,
             check=same_as_reference),
        Case("batch_size 2**64", js({**MIDNIGHT_GOOD, "batch_size": 2**64}), 400,
             "number_too_large"),
        Case("encoding_format hex", js({**MIDNIGHT_GOOD, "encoding_format": "hex"}), 400,
             "invalid_request"),
        Case("unknown field with a 10k name", js({**MIDNIGHT_GOOD, "f" * 10_000: 1}), 400,
             "invalid_request"),
        Case("unknown field with control characters",
             js({**MIDNIGHT_GOOD, "\u202e\x00\x1b[31m": 1}), 400, "invalid_request"),
        Case("duplicate keys, last wins",
             b'{"task": "nope", "task": "classification", "image_base64": "'
             + b64(GOOD_PNG).encode() + b'"}', 200, check=same_as_reference),
        Case("URL not a string", js({"image_url": ["http://a/b.png"]}), 400, "invalid_request"),
        Case("10k-character host", js({"image_url": "http://" + "a" * 10_000 + ".com/x.png"}),
             400, "invalid_url"),
    ]
    for name, url, code in SSRF_URLS:
        cases.append(Case(f"SSRF {name}", js({"image_url": url.format(p=ssrf_port)}), 400, code))
    cases.append(Case("SSRF in a list", js({"image_urls": [
        f"http://127.0.0.1:{ssrf_port}/img.png"]}), 400, "url_private_address"))
    return cases


@pytest.fixture(scope="module")
def midnight(truss_server_factory) -> Served:
    server = truss_server_factory("midnight", env=COMMON_ENV)
    reference = run_case(server, Case("known-good request", js(MIDNIGHT_GOOD), 200))
    MIDNIGHT_REFERENCE.update(reference)
    return Served(server, midnight_embeddings(reference))


def test_midnight_has_enough_cases() -> None:
    assert len(midnight_cases_by_name(0)) >= 40


@functools.lru_cache(maxsize=2)
def midnight_cases_by_name(ssrf_port: int) -> Dict[str, Case]:
    return {case.name: case for case in midnight_cases(ssrf_port)}


@pytest.mark.parametrize("name", list(midnight_cases_by_name(0)))
def test_midnight(midnight: Served, ssrf_target: RecordingServer, name: str) -> None:
    run_case(midnight.server, midnight_cases_by_name(ssrf_target.port)[name])


def test_midnight_after_the_barrage(midnight: Served, ssrf_target: RecordingServer) -> None:
    assert ssrf_target.connections == [], "an SSRF form reached the loopback target"
    healthy_and_same(midnight, MIDNIGHT_GOOD, midnight_embeddings)
    soak_briefly("midnight", midnight.server)
    healthy_and_same(midnight, MIDNIGHT_GOOD, midnight_embeddings)


# === Derm ======================================================================================

DERM_GOOD = {"instances": [{"input_bytes": b64(GOOD_PNG)}]}


def derm_embedding(body: Any) -> Any:
    return body["predictions"][0]["embedding"]


def instance_error(code: str) -> Callable[[Any], None]:
    """The bad instance (first) gets `code`; the good one after it its usual embedding."""
    def check(body: Any) -> None:
        first, second = body["predictions"]
        assert first["error"]["code"] == code, first
        assert first["error"]["description"].startswith(("Failed to get prediction",
                                                         "Internal error"))
        np.testing.assert_array_equal(np.asarray(second["embedding"]),
                                      np.asarray(DERM_REFERENCE["embedding"]))
    return check


DERM_REFERENCE: Dict[str, Any] = {}


def with_good(instance: Any) -> bytes:
    return js({"instances": [instance, {"input_bytes": b64(GOOD_PNG)}]})


def derm_cases() -> List[Case]:
    gs = "gs://bkt/"
    instance_cases = [
        ("empty instance", {}, "missing_image"),
        ("instance not an object", "abc", "missing_image"),
        ("both sources", {"input_bytes": b64(GOOD_PNG), "gcs_uri": gs + "good.png"},
         "conflicting_inputs"),
        ("not base64", {"input_bytes": "@@@"}, "invalid_base64"),
        ("base64 number", {"input_bytes": 7}, "invalid_base64"),
        ("not an image", {"input_bytes": b64(NOT_IMAGE)}, "image_decode_failed"),
        ("truncated PNG", {"input_bytes": b64(GOOD_PNG[:3000])}, "image_decode_failed"),
        ("PNG header bomb", {"input_bytes": b64(png_header_bomb())}, "image_too_large"),
        ("PNG zlib bomb", {"input_bytes": b64(png_zlib_bomb())}, "image_too_large"),
        ("oversize base64", {"input_bytes": b64(b"\0" * (MAX_IMAGE_BYTES + 10))},
         "image_too_large"),
        ("gcs_uri null", {"gcs_uri": None}, "invalid_gcs_uri"),
        ("gcs_uri s3", {"gcs_uri": "s3://bkt/a.png"}, "invalid_gcs_uri"),
        ("gcs_uri http", {"gcs_uri": "http://127.0.0.1/a.png"}, "invalid_gcs_uri"),
        ("gcs_uri without extension", {"gcs_uri": gs + "noext"}, "invalid_gcs_uri"),
        ("gcs bucket uppercase", {"gcs_uri": "gs://BKT/a.png"}, "invalid_gcs_uri"),
        ("gcs object with CRLF", {"gcs_uri": gs + "a\r\nHost: x.png"}, "invalid_gcs_uri"),
        ("gcs 404", {"gcs_uri": gs + "missing.png"}, "fetch_failed"),
        ("gcs 403", {"gcs_uri": gs + "forbidden.png"}, "fetch_failed"),
        ("gcs object not an image", {"gcs_uri": gs + "not-image.png"}, "image_decode_failed"),
        ("gcs object too big", {"gcs_uri": gs + "big.png"}, "image_too_large"),
        ("gcs trickles past the deadline", {"gcs_uri": gs + "slow.png"}, "fetch_timeout"),
        ("gcs redirects to another loopback port", {"gcs_uri": gs + "moved.png"},
         "url_private_address"),
        ("bearer token with a newline", {"gcs_uri": gs + "good.png", "bearer_token": "a\nb"},
         "invalid_request"),
        ("bearer token not a string", {"gcs_uri": gs + "good.png", "bearer_token": 5},
         "invalid_request"),
    ]
    cases = [Case(f"instance: {name}", with_good(instance), 200, check=instance_error(code))
             for name, instance, code in instance_cases]
    return [
        *body_cases(DERM_GOOD, {"instances": [{"input_bytes": GOOD_PNG}]},
                    ignores_unknown_fields=True),
        *cases,
        Case("1x1 PNG", js({"instances": [{"input_bytes": b64(png((1, 1)))}]}), 200,
             check=lambda b: len(b["predictions"][0]["embedding"]) == 6144),
        Case("2048x2048 JPEG", js({"instances": [{"input_bytes": b64(
            jpeg((2048, 2048), "astronaut", quality=85))}]}), 200,
            check=lambda b: len(b["predictions"][0]["embedding"]) == 6144),
        Case("1000x50 PNG", js({"instances": [{"input_bytes": b64(png((1000, 50)))}]}), 200,
             check=lambda b: "embedding" in b["predictions"][0]),
        Case("gcs object good", js({"instances": [{"gcs_uri": gs + "good.png"}]}), 200,
             check=lambda b: np.testing.assert_array_equal(
                 np.asarray(derm_embedding(b)), np.asarray(DERM_REFERENCE["embedding"]))),
        Case("no instances field", js({"predict": []}), 400, "invalid_request"),
        Case("instances empty", js({"instances": []}), 400, "invalid_request"),
        Case("instances an object", js({"instances": {}}), 400, "invalid_request"),
        Case("nine instances (limit 8)", js({"instances": [{}] * 9}), 400, "too_many_images"),
        Case("parameters not an object", js({**DERM_GOOD, "parameters": [1]}), 400,
             "invalid_request"),
        Case("bad encoding parameter", js({**DERM_GOOD, "parameters": {
            "encoding_format": "hex"}}), 400, "invalid_request"),
    ]


@pytest.fixture(scope="module")
def derm(truss_server_factory, gcs) -> Served:
    env = {**COMMON_ENV, "VFM_GCS_ENDPOINT": gcs["endpoint"].base}
    server = truss_server_factory("derm", env=env)
    reference = run_case(server, Case("known-good request", js(DERM_GOOD), 200))
    DERM_REFERENCE.update(reference["predictions"][0])
    return Served(server, derm_embedding(reference))


def test_derm_has_enough_cases() -> None:
    assert len(derm_cases()) >= 40


@pytest.mark.parametrize("case", derm_cases(), ids=lambda c: c.name)
def test_derm(derm: Served, case: Case) -> None:
    run_case(derm.server, case)


def test_derm_after_the_barrage(derm: Served, gcs: Dict[str, RecordingServer]) -> None:
    assert gcs["elsewhere"].connections == [], "a GCS redirect reached a private address"
    paths = {path.split("?")[0] for path, _ in gcs["endpoint"].requests}
    assert all(p.startswith("/download/storage/v1/b/bkt/o/") for p in paths), paths
    healthy_and_same(derm, DERM_GOOD, derm_embedding)
    soak_briefly("derm", derm.server)
    healthy_and_same(derm, DERM_GOOD, derm_embedding)


# === SAFE ======================================================================================


def safe_body(data: bytes, media: str = "image/png") -> Dict[str, Any]:
    return {"image": {"mediaType": media, "data": b64(data)}}


SAFE_GOOD = safe_body(GOOD_PNG)


def safe_numbers(body: Any) -> Any:
    return body["logprobs"]


def safe_contract(size) -> Callable[[Any], None]:
    def check(body: Any) -> None:
        assert len(body["logprobs"]) == 4 and np.isfinite(body["logprobs"]).all()
        mask = Image.open(io.BytesIO(base64.b64decode(body["localizationMask"]["data"])))
        assert mask.size == size
    return check


def safe_cases() -> List[Case]:
    mpo_bytes = mpo()
    return [
        *body_cases(SAFE_GOOD, {"image": {"mediaType": "image/png", "data": GOOD_PNG}},
                    ignores_unknown_fields=True),
        Case("1x1 PNG (min side 16)", js(safe_body(png((1, 1)))), 400, "invalid_image_geometry"),
        Case("16x16 PNG", js(safe_body(png((16, 16)))), 200, check=safe_contract((16, 16))),
        Case("2048x2048 JPEG", js(safe_body(jpeg((2048, 2048), "astronaut", quality=85),
                                            "image/jpeg")), 200,
             check=safe_contract((2048, 2048))),
        Case("1000x50 PNG (aspect 20 > 16)", js(safe_body(png((1000, 50)))), 400,
             "invalid_image_geometry"),
        Case("800x50 PNG (aspect 16)", js(safe_body(png((800, 50)))), 200,
             check=safe_contract((800, 50))),
        Case("MPO declared JPEG", js(safe_body(mpo_bytes, "image/jpeg")), 200,
             check=safe_contract((200, 150))),
        Case("MPO declared PNG", js(safe_body(mpo_bytes, "image/png")), 400,
             "media_type_mismatch"),
        Case("PNG declared JPEG", js(safe_body(GOOD_PNG, "image/jpeg")), 400,
             "media_type_mismatch"),
        Case("JPEG declared PNG", js(safe_body(jpeg(), "image/png")), 400, "media_type_mismatch"),
        Case("GIF declared PNG", js(safe_body(animated_gif(), "image/png")), 400,
             "media_type_mismatch"),
        Case("mediaType gif", js(safe_body(animated_gif(), "image/gif")), 400,
             "media_type_mismatch"),
        Case("mediaType missing", js({"image": {"data": b64(GOOD_PNG)}}), 400,
             "media_type_mismatch"),
        Case("mediaType a number", js({"image": {"mediaType": 5, "data": b64(GOOD_PNG)}}), 400,
             "media_type_mismatch"),
        Case("mediaType with control chars", js(safe_body(GOOD_PNG, "image/png\x00\u202e")), 400,
             "media_type_mismatch"),
        Case("mediaType in capitals", js(safe_body(GOOD_PNG, "IMAGE/PNG")), 200,
             check=safe_contract((256, 256))),
        Case("CMYK JPEG", js(safe_body(cmyk_jpeg(), "image/jpeg")), 200,
             check=safe_contract((160, 120))),
        Case("RGBA PNG", js(safe_body(rgba_png())), 200, check=safe_contract((100, 80))),
        Case("16-bit PNG", js(safe_body(sixteen_bit_png())), 200, check=safe_contract((120, 90))),
        Case("not an image", js(safe_body(NOT_IMAGE)), 400, "image_decode_failed"),
        Case("truncated PNG", js(safe_body(GOOD_PNG[: len(GOOD_PNG) // 2])), 400,
             "image_decode_failed"),
        Case("PNG header bomb", js(safe_body(png_header_bomb())), 400, "image_too_large"),
        Case("PNG zlib bomb", js(safe_body(png_zlib_bomb())), 400, "image_too_large"),
        Case("oversize base64", js(safe_body(b"\0" * (MAX_IMAGE_BYTES + 10))), 400,
             "image_too_large"),
        Case("data not base64", js({"image": {"mediaType": "image/png", "data": "%%%"}}), 400,
             "invalid_base64"),
        Case("data empty", js({"image": {"mediaType": "image/png", "data": ""}}), 400,
             "invalid_base64"),
        Case("data a list", js({"image": {"mediaType": "image/png", "data": [1]}}), 400,
             "invalid_base64"),
        Case("data missing", js({"image": {"mediaType": "image/png"}}), 400, "missing_image"),
        Case("image missing", js({"picture": 1}), 400, "missing_image"),
        Case("image a string", js({"image": "abc"}), 400, "invalid_request"),
        Case("URL-safe unpadded base64", js({"image": {
            "mediaType": "image/png",
            "data": base64.urlsafe_b64encode(GOOD_PNG).decode().rstrip("=")}}), 200,
             check=lambda b: b["logprobs"] == SAFE_REFERENCE["logprobs"]),
        Case("extra top-level fields ignored", js({**SAFE_GOOD, "meta": {"id": 1}}), 200,
             check=lambda b: b["logprobs"] == SAFE_REFERENCE["logprobs"]),
    ]


SAFE_REFERENCE: Dict[str, Any] = {}


@pytest.fixture(scope="module")
def safe(truss_server_factory) -> Served:
    server = truss_server_factory("safe_detector", env=COMMON_ENV)
    reference = run_case(server, Case("known-good request", js(SAFE_GOOD), 200))
    SAFE_REFERENCE.update(reference)
    return Served(server, safe_numbers(reference))


def test_safe_has_enough_cases() -> None:
    assert len(safe_cases()) >= 40


@pytest.mark.parametrize("case", safe_cases(), ids=lambda c: c.name)
def test_safe(safe: Served, case: Case) -> None:
    run_case(safe.server, case)


def test_safe_after_the_barrage(safe: Served) -> None:
    healthy_and_same(safe, SAFE_GOOD, safe_numbers)
    soak_briefly("safe_detector", safe.server)
    healthy_and_same(safe, SAFE_GOOD, safe_numbers)
