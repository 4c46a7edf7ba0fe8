"""JSON-encoding micro-benchmark: a segmentation response of 8 ViT-S grids ([8, 384, 16, 16]
float32), the old path against the serving package's encoders, in this process.

    old          {"embeddings": array.tolist(), ...} -> json.dumps -> bytes   (before issue 8)
    float32      encode_items(..., "float", "float32") -> http.errors.json_response (orjson,
                 OPT_SERIALIZE_NUMPY: no Python float objects)
    base64 f32   encode_items(..., "base64", "float32") -> json_response
    base64 f16   encode_items(..., "base64", "float16") -> json_response
"""

import json
import statistics
import time
from typing import Any, Callable, Dict, Tuple

import numpy as np

from vfm_serving.http.errors import json_response
from vfm_serving.outputs.arrays import encode_items

SHAPE = (8, 384, 16, 16)


def _payload(embeddings: Any, shape: Tuple[int, ...]) -> Dict[str, Any]:
    """The fields of a Midnight response around `embeddings` (as MidnightApi.respond builds)."""
    return {"embeddings": embeddings, "embedding_shape": list(shape), "task": "segmentation",
            "model_id": "bench", "input_size": 224, "actual_batch_size": shape[0],
            "requested_batch_size": None, "optimal_batch_size": 32, "gpu_memory_gb": None}


def _old(array: np.ndarray) -> bytes:
    return json.dumps(_payload(array.tolist(), array.shape)).encode()


def _new(fmt: str, dtype: str) -> Callable[[np.ndarray], bytes]:
    def encode(array: np.ndarray) -> bytes:
        return bytes(json_response(_payload(encode_items(array, fmt, dtype), array.shape)).body)
    return encode


ENCODERS: Dict[str, Callable[[np.ndarray], bytes]] = {
    "old_tolist_json_dumps": _old,
    "float_float32_orjson": _new("float", "float32"),
    "base64_float32": _new("base64", "float32"),
    "base64_float16": _new("base64", "float16"),
}


def run(repeats: int = 7, seed: int = 0) -> Dict[str, Any]:
    """Time every encoder `repeats` times (interleaved) on one random [8, 384, 16, 16] array.

    Returns:
        {"shape", "repeats", "encoders": {name: {"median_s", "min_s", "max_s", "bytes",
        "speedup_vs_old"}}}
    """
    array = np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)
    times: Dict[str, list] = {name: [] for name in ENCODERS}
    sizes = {name: len(encode(array)) for name, encode in ENCODERS.items()}  # warm-up
    for _ in range(repeats):
        for name, encode in ENCODERS.items():
            started = time.perf_counter()
            encode(array)
            times[name].append(time.perf_counter() - started)
    old = statistics.median(times["old_tolist_json_dumps"])
    return {
        "shape": list(SHAPE), "repeats": repeats,
        "encoders": {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t),
                            "bytes": sizes[name],
                            "speedup_vs_old": old / statistics.median(t)}
                     for name, t in times.items()},
    }
