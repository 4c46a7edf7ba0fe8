"""The one place a ServingError becomes an HTTP status and body.

Body of every request-level error: {"error": {"code": <stable code>, "message": <text>}}.
Client mistakes get the error class's `http_status` (400, 413, 415 ...); server faults 500.
Anything that is not a ServingError is a bug: logged with its traceback, answered 500
`internal_error` with no detail.
"""

import logging
from typing import Any, Dict, Tuple

import orjson
from starlette.responses import Response

from vfm_serving.errors import InternalError, ServingError

log = logging.getLogger(__name__)
JSON = "application/json"


def error_status_and_body(err: ServingError) -> Tuple[int, Dict[str, Any]]:
    """(HTTP status, JSON-ready body) of a request-level error."""
    status = err.http_status if err.client_error else max(err.http_status, 500)
    return status, {"error": err.to_dict()}


def json_response(payload: Any, status: int = 200) -> Response:
    """`payload` (dicts, lists, numpy arrays, numbers) -> a ready JSON response, encoded once.

    Strings that are not valid UTF-8 (lone surrogates) are replaced, so an error body always
    encodes.
    """
    try:
        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        body = orjson.dumps(_scrub(payload), option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code=status, media_type=JSON)


def error_response(err: BaseException, model: str) -> Response:
    """A Response for any exception raised while serving a request; logs server faults."""
    if not isinstance(err, ServingError):
        log.error("%s: unexpected %s while serving a request", model, type(err).__name__,
                  exc_info=err)
        err = InternalError("internal error while serving the request")
    elif not err.client_error:
        log.error("%s: server fault %s: %s", model, err.code, err.message)
    status, body = error_status_and_body(err)
    return json_response(body, status)


def _scrub(value: Any) -> Any:
    """Copy of `value` that orjson can encode: every str made valid UTF-8 (lone surrogates ->
    U+FFFD), integers beyond 64 bits written as their decimal text."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool) \
            and not -(2 ** 63) <= value < 2 ** 64:
        return str(value)
    if isinstance(value, dict):
        return {_scrub(str(k)): _scrub(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v) for v in value]
    return value
