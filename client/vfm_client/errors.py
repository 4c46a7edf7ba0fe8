"""Errors of the client: a run-level failure (raise) versus a per-item error (a value)."""

import dataclasses
from typing import Optional


class VfmError(Exception):
    """Base class of every exception this package raises on purpose."""


class RunError(VfmError):
    """The run itself cannot proceed: bad arguments, unreachable server, rejected API key, a
    slide without microns-per-pixel, an output written by a different run. `vfm` exits 1."""


class SchemaError(VfmError):
    """A request the client built (or a response it received) does not match the API's JSON
    Schema in `schemas/`. `where` is the JSON path of the first violation."""

    def __init__(self, api: str, kind: str, where: str, message: str) -> None:
        super().__init__(f"{api} {kind} does not match its schema at {where}: {message}")
        self.api, self.kind, self.where = api, kind, where


@dataclasses.dataclass(frozen=True)
class ItemError:
    """Why one item has no result. `code` is the server's stable code (e.g. `image_decode_failed`)
    or a client code (`connection_failed`, `http_503`, `file_not_found`, `request_too_large`, ...).
    """

    code: str
    message: str
    status: Optional[int] = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class PartialFailureError(VfmError):
    """Raised by the array-returning helpers (`MidnightClient.embed`) when some items failed.
    `results` holds every item's outcome in input order (the successful ones included)."""

    def __init__(self, results: "object", failed: int, total: int) -> None:
        super().__init__(f"{failed} of {total} images failed; see .results for each error")
        self.results = results
