"""Where the time goes: each CPU stage of the serving path timed alone, in this process, with the
serving package's own functions (min and median of a few repeats; the min is the best estimate
of the CPU cost on a shared machine).

    per image      base64 (serving decode_base64 vs bare base64.b64decode), decode_rgb (reduced
                   and full), resize_and_crop, for a 512x512 photo JPEG and a 4000x3000 JPEG;
                   Pillow draft decode at each DCT scale (1, 1/2, 1/4, 1/8) of the large JPEG
    per request    read_body (serving JSON parser with its guards) vs bare json.loads, for the
                   32-photo and the 8-large-JPEG bodies
    forward        ms per image of the bare forward pass at batch 1, 2, 4, 8, 16, 32
    interference   forward of 32 tiles alone, vs the same forward while 8 threads decode the 32
                   photos (what the server does: decode overlaps the forward pass), vs decode
                   alone: how much the overlap costs on this CPU
"""

import base64
import concurrent.futures
import io
import json
import statistics
import time
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import orjson
from PIL import Image

from vfm_serving.embeddings.dinov2 import Backbone, forward_tokens
from vfm_serving.embeddings.preprocess import resize_and_crop
from vfm_serving.http.body import read_body
from vfm_serving.inputs.base64_data import decode_base64
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings


def timeit(fn: Callable[[], Any], repeats: int) -> Dict[str, float]:
    """{"min_ms", "median_ms"} of `repeats` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return {"min_ms": min(times), "median_ms": statistics.median(times)}


def per_image(data: bytes, side: int, repeats: int) -> Dict[str, Any]:
    """CPU costs of one encoded image through the serving package's decode path."""
    reduced, full = ServingSettings(), ServingSettings(reduced_decode=False)
    text = base64.b64encode(data).decode()
    image_r = decode_rgb(data, reduced, reduce_for=side)
    image_f = decode_rgb(data, full, reduce_for=side)
    return {
        "jpeg_bytes": len(data), "size": list(image_f.size),
        "reduced_decode_size": list(image_r.size),
        "serving_decode_base64": timeit(lambda: decode_base64(text, 1 << 30), repeats),
        "bare_b64decode": timeit(lambda: base64.b64decode(text, validate=True), repeats),
        "decode_rgb_reduced": timeit(lambda: decode_rgb(data, reduced, reduce_for=side), repeats),
        "decode_rgb_full": timeit(lambda: decode_rgb(data, full, reduce_for=side), repeats),
        "resize_and_crop_from_reduced": timeit(
            lambda: np.asarray(resize_and_crop(image_r, side)), repeats),
        "resize_and_crop_from_full": timeit(
            lambda: np.asarray(resize_and_crop(image_f, side)), repeats),
    }


def draft_scales(data: bytes, repeats: int) -> Dict[str, Dict[str, float]]:
    """Pillow JPEG decode (to RGB) at each DCT scale: {"1/k": timing}."""
    width, height = Image.open(io.BytesIO(data)).size
    out = {}
    for scale in (1, 2, 4, 8):
        def decode(scale: int = scale) -> None:
            image = Image.open(io.BytesIO(data))
            if scale > 1:
                image.draft("RGB", (width // scale, height // scale))
            image.load()
        out[f"1/{scale}"] = timeit(decode, repeats)
    return out


def body_parse(body: bytes, repeats: int) -> Dict[str, Any]:
    """read_body (the serving JSON path) vs json.loads and orjson.loads of the same body."""
    settings = ServingSettings()
    return {"bytes": len(body),
            "serving_read_body": timeit(lambda: read_body(body, "application/json", settings),
                                        repeats),
            "bare_json_loads": timeit(lambda: json.loads(body), repeats),
            "bare_orjson_loads": timeit(lambda: orjson.loads(body), repeats)}


def forward_by_batch(backbone: Backbone, batch: Any, repeats: int) -> Dict[str, Dict[str, float]]:
    """Bare forward ms per image at each batch size (batch: normalized [32, 3, S, S])."""
    out = {}
    for size in (1, 2, 4, 8, 16, 32):
        timing = timeit(lambda size=size: forward_tokens(backbone, batch[:size]), repeats)
        out[str(size)] = {k: v / size for k, v in timing.items()}
    return out


def interference(backbone: Backbone, batch: Any, images: Sequence[bytes], workers: int,
                 repeats: int) -> Dict[str, Any]:
    """Forward alone, decode alone (`workers` threads), and both at once (wall ms)."""
    settings = ServingSettings()
    side = backbone.layout.input_size
    pool = concurrent.futures.ThreadPoolExecutor(workers)

    def decode_all() -> List[Any]:
        return list(pool.map(lambda d: np.asarray(resize_and_crop(
            decode_rgb(d, settings, reduce_for=side), side)), images))

    def both() -> None:
        pending = pool.map(lambda d: np.asarray(resize_and_crop(
            decode_rgb(d, settings, reduce_for=side), side)), images)
        forward_tokens(backbone, batch)
        list(pending)

    try:
        forward = timeit(lambda: forward_tokens(backbone, batch), repeats)
        decode = timeit(decode_all, repeats)
        overlapped = timeit(both, repeats)
    finally:
        pool.shutdown()
    return {"images": len(images), "decode_threads": workers, "forward_alone": forward,
            "decode_alone": decode, "forward_while_decoding": overlapped,
            "overlap_saves_ms": forward["min_ms"] + decode["min_ms"] - overlapped["min_ms"]}


def run(backbone: Backbone, inputs: Dict[str, List[bytes]], batch32: Any, bodies: Dict[str, bytes],
        repeats: int = 5) -> Dict[str, Any]:
    """Every measurement of the module docstring."""
    side = backbone.layout.input_size
    return {
        "repeats": repeats,
        "photo_512": per_image(inputs["photos"][0], side, repeats),
        "large_4000x3000": per_image(inputs["large"][0], side, repeats),
        "large_draft_scales": draft_scales(inputs["large"][0], repeats),
        "body_parse": {name: body_parse(data, 3) for name, data in bodies.items()},
        "forward_ms_per_image_by_batch": forward_by_batch(backbone, batch32, 3),
        "interference_32_photos": interference(backbone, batch32, inputs["photos"], 8, 3),
    }
