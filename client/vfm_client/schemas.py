"""The three APIs' JSON Schemas (files in `vfm_client/schemas/`, published as `schemas/` at the
repository root) and validation against them.

Every request the clients build is validated before it is sent; every 200 response is validated
before it is decoded. Large numeric payloads (float-list embeddings) are checked by numpy in the
decoders (count and shape against `embedding_shape`), not number by number: the schema check
here sees each embedding cut to its first element, which keeps a 12-million-number segmentation
response from costing a minute of validation.
"""

import functools
import json
from importlib import resources
from typing import Any, Dict

import jsonschema

from vfm_client.errors import SchemaError

APIS = ("midnight", "derm", "safe")
KINDS = ("request", "response")


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> Dict[str, Any]:
    """The parsed schema `<name>.schema.json`, e.g. `midnight.request`.

    Raises:
        FileNotFoundError: no such schema.
    """
    text = resources.files("vfm_client").joinpath("schemas", f"{name}.schema.json").read_text(
        encoding="utf-8")
    return json.loads(text)


@functools.lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def validate(api: str, kind: str, body: Any) -> None:
    """Validate `body` against `<api>.<kind>` (kind: request, response, or `error.response`).

    Raises:
        SchemaError: the first (best-matching) violation, with its JSON path.
    """
    name = f"{api}.{kind}"
    instance = _light(api, body) if kind == "response" else body
    error = jsonschema.exceptions.best_match(_validator(name).iter_errors(instance))
    if error is not None:
        raise SchemaError(api, kind, error.json_path, error.message[:300])


def _light(api: str, body: Any) -> Any:
    """`body` with float-list embeddings cut to their first scalar path (see module doc)."""
    if not isinstance(body, dict):
        return body
    if api == "midnight" and isinstance(body.get("embeddings"), list):
        return {**body, "embeddings": [_first(e) for e in body["embeddings"]]}
    if api == "derm" and isinstance(body.get("predictions"), list):
        return {**body, "predictions": [
            {**p, "embedding": _first(p["embedding"])}
            if isinstance(p, dict) and isinstance(p.get("embedding"), list) else p
            for p in body["predictions"]]}
    return body


def _first(value: Any) -> Any:
    if isinstance(value, list) and value:
        return [_first(value[0])]
    return value
