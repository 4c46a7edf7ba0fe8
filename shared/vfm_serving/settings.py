"""Every serving limit in one place.

Each field is a named, documented setting read from an environment variable `VFM_<FIELD>` (upper
case), so a Truss can change it in its `config.yaml` under `environment_variables` without code
changes. The README lists the same table.
"""

import dataclasses
import os
from typing import Any, Callable, Dict, Mapping, Optional

ENV_PREFIX = "VFM_"
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


@dataclasses.dataclass(frozen=True)
class ServingSettings:
    """Limits and knobs shared by all Trusses.

    Attributes:
        max_images_per_request: most images one request may carry; more -> `too_many_images`.
        max_batch_size: most items one forward pass may hold (merged across requests); the
            device may lower it (Midnight's `optimal_batch_size`, computed from free memory). A
            requested `batch_size` above it is lowered to it (reported, never an error).
        max_image_bytes: largest encoded image accepted, from any source (after base64 decoding).
        max_image_pixels: largest decoded width*height; guards against decompression bombs.
        min_image_side: smallest accepted width or height in pixels.
        max_aspect_ratio: largest accepted long-side/short-side ratio.
        fetch_timeout_s: total deadline for one URL or GCS download (connect, redirects, every
            byte of the body), not a per-read timeout.
        fetch_concurrency: how many images of one request are fetched and decoded at once (also
            bounds how many full-size decoded images are in memory per request).
        decode_concurrency: how many images are decoded / prepared (CPU work) at once, across
            requests; 0 = the CPUs this process may use. Fetching (network) is bounded by
            fetch_concurrency only: more decoding threads than cores only slows each down.
        max_redirects: most HTTP redirects followed per download; each hop is re-checked.
        allow_private_urls: fetch URLs whose host resolves to loopback/private/link-local/...
            addresses (off by default: SSRF guard; tests and on-prem deployments turn it on).
        max_request_bytes: largest request body read, in bytes (Baseten's edge caps at 100 MB).
        max_json_depth: deepest nesting of arrays/objects accepted in a request body.
        reduced_decode: decode JPEGs much larger than the model input at a reduced DCT scale
            (Pillow draft mode) before the resize; off = full decode, bit-exact model-card numbers.
        precision: forward-pass dtype: auto (float16 on CUDA, float32 on CPU) | float32 |
            float16 | bfloat16.
        batch_max_wait_ms: how long the dynamic batcher waits for more items (from any request)
            once it has one, before running a forward pass that is not full.
        batch_fill_wait_ms: while images already being fetched / decoded could still fill the
            pass, the batcher keeps it open up to this long (after its oldest image) instead
            (a request of 8 images becomes one pass of 8, not passes of what decoded first).
        dynamic_batching: merge items of concurrent requests into one forward pass; off = a pass
            holds items of one request only (the pre-batcher behaviour, for comparison).
        health_recheck_s: the readiness probe repeats the golden inference at most this often
            (seconds); in between it reports the last result.
        gcs_endpoint: base URL of the GCS JSON API (an emulator in tests).
        safe_window_stride: SAFE detector: stride in pixels between the backbone-sized windows
            that tile an image (window = backbone input size, 224); smaller = more overlap.
        safe_max_windows: SAFE detector: most windows per image; a larger image is downscaled
            until its windows fit (bounds latency and memory for huge inputs).
    """

    max_images_per_request: int = 64
    max_batch_size: int = 32
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    min_image_side: int = 1
    max_aspect_ratio: float = 1000.0
    fetch_timeout_s: float = 15.0
    fetch_concurrency: int = 8
    decode_concurrency: int = 0
    max_redirects: int = 5
    allow_private_urls: bool = False
    max_request_bytes: int = 100 * 1024 * 1024
    max_json_depth: int = 32
    reduced_decode: bool = True
    precision: str = "auto"
    batch_max_wait_ms: float = 5.0
    batch_fill_wait_ms: float = 200.0
    dynamic_batching: bool = True
    health_recheck_s: float = 10.0
    gcs_endpoint: str = "https://storage.googleapis.com"
    safe_window_stride: int = 168
    safe_max_windows: int = 16

    @classmethod
    def from_env(
        cls, environ: Optional[Mapping[str, str]] = None, **defaults: Any
    ) -> "ServingSettings":
        """Build settings from `defaults` (a Truss's own choices) overridden by `VFM_*` variables.

        Raises:
            ValueError: a variable does not parse as its field's type (a deploy mistake, not a
                client one: the Truss fails to load, loudly).
        """
        environ = os.environ if environ is None else environ
        values = dict(defaults)
        for field in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + field.name.upper())
            if raw is None:
                continue
            type_name = field.type if isinstance(field.type, str) else field.type.__name__
            caster: Callable[[str], Any] = _CASTERS[type_name]
            try:
                values[field.name] = caster(raw)
            except ValueError as exc:
                raise ValueError(f"{ENV_PREFIX}{field.name.upper()}={raw!r}: {exc}") from exc
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ValueError when the settings contradict each other."""
        for name in ("max_images_per_request", "max_batch_size", "max_image_bytes",
                     "max_image_pixels", "min_image_side", "fetch_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_aspect_ratio < 1 or self.fetch_timeout_s <= 0:
            raise ValueError("max_aspect_ratio must be >= 1 and fetch_timeout_s > 0")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        if (self.max_redirects < 0 or self.batch_max_wait_ms < 0 or self.decode_concurrency < 0
                or self.batch_fill_wait_ms < 0 or self.max_json_depth < 2):
            raise ValueError("max_redirects, batch_max_wait_ms, batch_fill_wait_ms and "
                             "decode_concurrency must be >= 0, max_json_depth >= 2")

    def decode_slots(self) -> int:
        """`decode_concurrency`, or the CPUs this process may use when it is 0."""
        if self.decode_concurrency:
            return self.decode_concurrency
        return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                   else os.cpu_count() or 1)


def _parse_bool(raw: str) -> bool:
    """'1/true/yes/on' -> True, '0/false/no/off/' -> False (case-insensitive).

    Raises:
        ValueError: anything else.
    """
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


_CASTERS: Dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str,
                                             "bool": _parse_bool}
