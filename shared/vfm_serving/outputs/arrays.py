"""Embedding arrays -> response values: JSON numbers or base64 bytes, float32 or float16.

    encoding_format "float":  the array itself; the JSON encoder (orjson) writes each value as the
                              shortest decimal that reads back to the same float32 / float16.
    encoding_format "base64": one string per item: base64 of the item's little-endian bytes in C
                              order; decode with
                              np.frombuffer(base64.b64decode(s), "<f4").reshape(shape[1:])
                              ("<f2" for float16).
"""

import base64
from typing import List, Union

import numpy as np

FLOAT = "float"
BASE64 = "base64"
ENCODING_FORMATS = (FLOAT, BASE64)
EMBEDDING_DTYPES = {"float32": "<f4", "float16": "<f2"}


def encode_items(values: np.ndarray, encoding_format: str, embedding_dtype: str
                 ) -> Union[np.ndarray, List[str]]:
    """[N, ...] array -> the `embeddings` value of a response.

    Returns:
        "float": the [N, ...] array cast to `embedding_dtype` (serialized by the JSON encoder);
        "base64": N strings, item i = base64 of values[i] as `embedding_dtype`, little-endian.

    Raises:
        ValueError: unknown format or dtype (the API validates both first).
    """
    dtype = np.dtype(EMBEDDING_DTYPES[embedding_dtype])
    cast = np.ascontiguousarray(values, dtype=dtype)
    if encoding_format == FLOAT:
        return cast.astype(dtype.newbyteorder("="), copy=False)
    if encoding_format == BASE64:
        return [base64.b64encode(item.tobytes(order="C")).decode("ascii") for item in cast]
    raise ValueError(f"unknown encoding_format {encoding_format!r}")
