"""Decode embeddings from responses: JSON float lists or base64 little-endian bytes.

The one line of numpy for a base64 embedding (C order, shape `embedding_shape[1:]`):
    np.frombuffer(base64.b64decode(s), dtype="<f2" or "<f4").reshape(embedding_shape[1:])
"""

import base64
import binascii
from typing import Any, List, Optional, Sequence

import numpy as np

LITTLE_ENDIAN = {"float32": "<f4", "float16": "<f2"}


def decode_base64_array(text: str, dtype: str, shape: Optional[Sequence[int]] = None
                        ) -> np.ndarray:
    """One base64 embedding -> float32 array of `shape` (flat if None).

    Raises:
        ValueError: not base64, or the byte count does not fit dtype / shape.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"embedding is not base64: {exc}") from exc
    width = np.dtype(LITTLE_ENDIAN[dtype]).itemsize
    if len(raw) % width:
        raise ValueError(f"{len(raw)} bytes is not a whole number of {dtype} values")
    values = np.frombuffer(raw, dtype=LITTLE_ENDIAN[dtype])
    if shape is not None:
        expected = int(np.prod(shape))
        if values.size != expected:
            raise ValueError(f"embedding has {values.size} values, shape {list(shape)} needs "
                             f"{expected}")
        values = values.reshape(tuple(shape))
    return values.astype(np.float32)


def decode_midnight(body: Any, count: int, requested_dtype: str) -> List[np.ndarray]:
    """A Midnight 200 body -> `count` float32 arrays of shape embedding_shape[1:].

    Raises:
        ValueError: the count or shapes disagree with `embedding_shape`.
    """
    shape = [int(v) for v in body["embedding_shape"]]
    if shape[0] != count:
        raise ValueError(f"server returned {shape[0]} embeddings for {count} images")
    embeddings = body["embeddings"]
    if len(embeddings) != count:
        raise ValueError(f"{len(embeddings)} embeddings for embedding_shape {shape}")
    if all(isinstance(e, str) for e in embeddings):
        dtype = body.get("embedding_dtype") or requested_dtype
        return [decode_base64_array(e, dtype, shape[1:]) for e in embeddings]
    array = np.asarray(embeddings, dtype=np.float32)
    if list(array.shape) != shape:
        raise ValueError(f"embeddings of shape {list(array.shape)}, embedding_shape says {shape}")
    return [array[i] for i in range(count)]


def decode_vector(value: Any, dtype: str) -> np.ndarray:
    """A Derm `embedding` (float list or base64 string) -> 1-D float32 array.

    Raises:
        ValueError: malformed.
    """
    if isinstance(value, str):
        return decode_base64_array(value, dtype)
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 1:
        raise ValueError(f"embedding of shape {array.shape}, expected a vector")
    return array
