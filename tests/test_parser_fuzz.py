"""Property tests of the request parsers (hypothesis): any body, through read_body, each API's
parse and each item's source checks, ends in a ParsedRequest or a client-side ServingError whose
HTTP error response encodes. No network: URL items are checked as the fetcher would before
connecting, base64 items decoded, gs:// items parsed.
"""

import json
from typing import Any

import msgpack
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vfm_serving import errors
from vfm_serving.apis.midnight import KNOWN_FIELDS, MidnightApi, ServedModel
from vfm_serving.apis.safe import SafeApi
from vfm_serving.apis.vertex_derm import VertexDermApi, VertexIdentity, error_prediction
from vfm_serving.http.body import read_body
from vfm_serving.http.errors import error_response
from vfm_serving.inputs import sources
from vfm_serving.inputs.base64_data import decode_base64
from vfm_serving.inputs.gcs import auth_headers, parse_gcs_uri
from vfm_serving.inputs.http_fetch import parse_target
from vfm_serving.serving import ParsedRequest
from vfm_serving.settings import ServingSettings

SETTINGS = ServingSettings(max_images_per_request=4, max_image_bytes=1000)
APIS = {
    "midnight": MidnightApi(SETTINGS, ServedModel("m", 224, 8, None)),
    "derm": VertexDermApi(SETTINGS, VertexIdentity("d", "m", "1", "n", True, 8)),
    "safe": SafeApi(),
}
FIELD_NAMES = sorted(KNOWN_FIELDS) + ["instances", "parameters", "input_bytes", "gcs_uri",
                                      "bearer_token", "image", "mediaType", "data",
                                      "encoding_format", "embedding_dtype"]
STRINGS = (st.text(max_size=12) | st.sampled_from([
    "classification", "segmentation", "base64", "float16", "image/png", "image/jpeg",
    "http://127.0.0.1/a.png", "https://example.com/x.jpg", "http://u:p@h/x", "ftp://h/x",
    "http://0x7f.1/", "gs://bkt/a.png", "gs://BAD/x", "data:image/png;base64,iVBORw0KGgo",
    "iVBORw0KGgo", "@@@", "", "\ud800", "a\nb"]))
SCALARS = st.none() | st.booleans() | st.integers(-10, 10**20) | st.floats() | STRINGS
KEYS = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(KEYS, inner, max_size=6), max_leaves=25)
BODIES = st.dictionaries(KEYS, VALUES, max_size=6) | VALUES
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_item(item: Any) -> None:
    """What happens to an item before any socket or decoder: its source checks."""
    if isinstance(item, errors.ServingError):
        assert item.client_error
        orjson.dumps(error_prediction(item))
        return
    try:
        if item.kind == sources.URL:
            parse_target(item.value)
        elif item.kind == sources.BASE64:
            decode_base64(item.value, SETTINGS.max_image_bytes)
        else:
            parse_gcs_uri(item.value)
            auth_headers(item.bearer_token)
    except errors.ServingError as err:
        assert err.client_error
        orjson.dumps(error_prediction(err))


def through(api_name: str, raw: bytes, content_type: str) -> None:
    try:
        parsed = APIS[api_name].parse(read_body(raw, content_type, SETTINGS))
    except errors.ServingError as err:
        assert err.client_error and 400 <= err.http_status < 500, err
        response = error_response(err, api_name)
        assert response.status_code == err.http_status
        json.loads(response.body)
        return
    assert isinstance(parsed, ParsedRequest)
    for item in parsed.items:
        check_item(item)


@FUZZ
@given(st.sampled_from(sorted(APIS)), BODIES)
def test_any_json_body(api_name: str, body: Any) -> None:
    try:
        raw = json.dumps(body).encode()
    except (ValueError, TypeError):
        return
    through(api_name, raw, "application/json")


@FUZZ
@given(st.sampled_from(sorted(APIS)), BODIES | st.binary(max_size=40))
def test_any_msgpack_body(api_name: str, body: Any) -> None:
    try:
        raw = msgpack.packb(body, use_bin_type=True, unicode_errors="surrogatepass")
    except (OverflowError, ValueError, UnicodeEncodeError, TypeError):
        return
    through(api_name, raw, "application/msgpack")


@FUZZ
@given(st.sampled_from(sorted(APIS)), st.binary(max_size=200),
       st.sampled_from([None, "application/json", "application/octet-stream", "text/csv"]))
def test_any_bytes(api_name: str, raw: bytes, content_type: Any) -> None:
    through(api_name, raw, content_type)
