"""The output-encoding choice shared by the embedding APIs (Midnight fields, Derm parameters)."""

import dataclasses
from typing import Any, Mapping

from vfm_serving.errors import InvalidRequest
from vfm_serving.outputs.arrays import EMBEDDING_DTYPES, ENCODING_FORMATS, FLOAT

ENCODING_FORMAT = "encoding_format"
EMBEDDING_DTYPE = "embedding_dtype"


@dataclasses.dataclass(frozen=True)
class OutputEncoding:
    """How embeddings are written: "float" JSON numbers or "base64" bytes; float32 or float16."""

    encoding_format: str = FLOAT
    embedding_dtype: str = "float32"


def parse_output_encoding(fields: Mapping[str, Any]) -> OutputEncoding:
    """Read `encoding_format` and `embedding_dtype` (both optional) from a request object.

    Raises:
        InvalidRequest: a value outside the documented choices.
    """
    fmt = fields.get(ENCODING_FORMAT, FLOAT)
    dtype = fields.get(EMBEDDING_DTYPE, "float32")
    if not isinstance(fmt, str) or fmt not in ENCODING_FORMATS:
        raise InvalidRequest(f"encoding_format must be one of {', '.join(ENCODING_FORMATS)}")
    if not isinstance(dtype, str) or dtype not in EMBEDDING_DTYPES:
        raise InvalidRequest(f"embedding_dtype must be one of {', '.join(EMBEDDING_DTYPES)}")
    return OutputEncoding(fmt, dtype)
