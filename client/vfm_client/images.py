"""Turn what a user hands the client (paths, bytes, PIL images, numpy arrays, URLs) into items.

An `ImageItem` is cheap: a path is read only when its request is built, so a million-file job
holds at most the in-flight requests' bytes in memory.
"""

import base64
import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Callable, Optional, Union

import numpy as np
from PIL import Image

from vfm_client.errors import ItemError

URL_PREFIXES = ("http://", "https://")
GCS_PREFIX = "gs://"
DATA_URL_PREFIX = "data:"


@dataclasses.dataclass(frozen=True)
class ImageItem:
    """One input image.

    kind: "path" (value: str path), "bytes" (value: encoded image bytes), "url" (http(s) URL),
    "gcs" (gs:// URI; Derm only), "lazy" (`loader()` makes the bytes when the request is built,
    e.g. a slide tile). `label` is the source as given (the `source` column). `size` is the
    encoded byte count (0 for URLs / gs:// URIs; an estimate for "lazy").
    """

    label: str
    kind: str
    value: Union[str, bytes]
    size: int = 0
    loader: Optional[Callable[[], bytes]] = dataclasses.field(default=None, compare=False,
                                                              repr=False)

    def read(self) -> bytes:
        """Encoded bytes of a "path" or "bytes" item.

        Raises:
            OSError: the file cannot be read.
            ValueError: the item is a URL / gs:// URI (no local bytes).
        """
        if self.kind == "bytes":
            assert isinstance(self.value, bytes)
            return self.value
        if self.kind == "path":
            return Path(str(self.value)).read_bytes()
        if self.kind == "lazy" and self.loader is not None:
            return self.loader()
        raise ValueError(f"{self.kind} item has no local bytes")

    def base64_size(self) -> int:
        """Characters of this item's base64 text (the URL's length for URLs)."""
        if self.kind in ("url", "gcs"):
            return len(str(self.value))
        return 4 * ((self.size + 2) // 3)


def to_item(obj: Any, index: int) -> Union[ImageItem, ItemError]:
    """One user input -> an ImageItem, or an ItemError when it cannot be one.

    Strings: `http(s)://...` -> URL, `gs://...` -> GCS URI, `data:...;base64,...` -> bytes,
    anything else -> a file path (must exist). `Path` -> file path. `bytes` -> encoded image.
    PIL image / numpy array (H x W, H x W x 3 or 4; uint8, uint16 grey, or float in [0, 1])
    -> lossless PNG.
    """
    if isinstance(obj, (str, os.PathLike)):
        text = os.fspath(obj)
        if isinstance(obj, str) and text.lower().startswith(URL_PREFIXES):
            return ImageItem(text, "url", text)
        if isinstance(obj, str) and text.lower().startswith(GCS_PREFIX):
            return ImageItem(text, "gcs", text)
        if isinstance(obj, str) and text.lower().startswith(DATA_URL_PREFIX):
            return _data_url(text)
        try:
            size = os.path.getsize(text)
        except OSError as exc:
            return ItemError("file_not_found", f"{text}: {exc.strerror or exc}")
        if not os.path.isfile(text):
            return ItemError("file_not_found", f"{text}: not a file")
        return ImageItem(text, "path", text, size)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        data = bytes(obj)
        return ImageItem(f"<bytes #{index}>", "bytes", data, len(data))
    if isinstance(obj, Image.Image):
        data = png_bytes(obj)
        return ImageItem(f"<PIL image #{index}>", "bytes", data, len(data))
    if isinstance(obj, np.ndarray):
        try:
            data = png_bytes(array_to_image(obj))
        except ValueError as exc:
            return ItemError("invalid_array", str(exc))
        return ImageItem(f"<array #{index}>", "bytes", data, len(data))
    return ItemError("unsupported_input", f"cannot use a {type(obj).__name__} as an image")


def _data_url(text: str) -> Union[ImageItem, ItemError]:
    head, _, payload = text.partition(",")
    if not head.endswith(";base64") or not payload:
        return ItemError("invalid_base64", "data URL is not base64")
    try:
        data = base64.b64decode(payload, validate=False)
    except ValueError as exc:
        return ItemError("invalid_base64", f"data URL: {exc}")
    return ImageItem(text[:40] + "...", "bytes", data, len(data))


def array_to_image(array: np.ndarray) -> Image.Image:
    """H x W (grey) or H x W x 3/4 array -> PIL image, without changing values.

    uint8 -> as is; uint16 grey -> 16-bit PNG; float in [0, 1] -> rounded to uint8.

    Raises:
        ValueError: other shapes, dtypes, or floats outside [0, 1] / not finite.
    """
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"array of shape {array.shape}: need H x W, H x W x 3 or H x W x 4")
    if array.dtype == np.uint8:
        return Image.fromarray(np.ascontiguousarray(array))
    if array.dtype == np.uint16 and array.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(array).astype(np.uint16), mode="I;16")
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or array.min() < 0 or array.max() > 1:
            raise ValueError("float arrays must be finite and within [0, 1]")
        return Image.fromarray(np.round(array * 255).astype(np.uint8))
    raise ValueError(f"array dtype {array.dtype}: use uint8, uint16 (grey) or float in [0, 1]")


def png_bytes(image: Image.Image) -> bytes:
    """Lossless PNG of a PIL image (modes PNG cannot hold are converted to RGB)."""
    if image.mode not in ("1", "L", "LA", "I;16", "I", "P", "RGB", "RGBA"):
        image = image.convert("RGB")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def media_type(data: bytes) -> Optional[str]:
    """"image/png" or "image/jpeg" from the magic bytes, else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    return None


def b64encode(data: bytes) -> str:
    """Standard base64 text of `data`."""
    return base64.b64encode(data).decode("ascii")
