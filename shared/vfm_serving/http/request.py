"""Read a raw request body with a byte cap, before anything parses it."""

from starlette.requests import Request

from vfm_serving.errors import RequestTooLarge


async def read_limited(request: Request, max_bytes: int) -> bytes:
    """The whole body of `request`, streamed, refused as soon as it passes `max_bytes`.

    Raises:
        RequestTooLarge: declared (Content-Length) or actual length above `max_bytes`.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestTooLarge(f"request body is {declared} bytes; the limit is {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise RequestTooLarge(f"request body is larger than the limit of {max_bytes} bytes")
    return bytes(body)
