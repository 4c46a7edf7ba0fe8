"""Image sources (URL or base64) -> decoded RGB images, fetched concurrently, order kept."""

import dataclasses
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List, Sequence

from PIL import Image

from vfm_serving.errors import ServingError
from vfm_serving.inputs.base64_data import decode_base64
from vfm_serving.inputs.http_fetch import fetch_url
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """One image as the client named it.

    kind: "url" (http/https) or "base64" (raw base64 or a data URL).
    label: where it came from in the request, e.g. "image_urls[3]", used in error messages.
    """

    kind: str
    value: object
    label: str


def source_bytes(source: ImageSource, settings: ServingSettings) -> bytes:
    """Encoded image bytes of one source.

    Raises:
        InvalidBase64, InvalidUrl, FetchFailed, ImageTooLarge.
    """
    if source.kind == "url":
        return fetch_url(source.value, max_bytes=settings.max_image_bytes,  # type: ignore[arg-type]
                         timeout_s=settings.fetch_timeout_s)
    if source.kind == "base64":
        return decode_base64(source.value, settings.max_image_bytes)  # type: ignore[arg-type]
    raise ValueError(f"unknown source kind {source.kind!r}")


def load_image(source: ImageSource, settings: ServingSettings) -> Image.Image:
    """One source -> RGB PIL image. Errors keep their class and code, prefixed with the label.

    Raises:
        any ServingError of `source_bytes` or `decode_rgb`.
    """
    try:
        return decode_rgb(source_bytes(source, settings), settings)
    except ServingError as exc:
        raise type(exc)(f"{source.label}: {exc.message}") from None


def load_images(sources: Sequence[ImageSource], settings: ServingSettings) -> List[Image.Image]:
    """All sources -> RGB images in the same order; downloads run `fetch_concurrency` at a time.

    Raises:
        the first failing source's ServingError (in request order); nothing is silently dropped.
    """
    started = time.perf_counter()
    if len(sources) <= 1:
        images = [load_image(s, settings) for s in sources]
    else:
        workers = min(settings.fetch_concurrency, len(sources))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fetch") as pool:
            futures = [pool.submit(load_image, s, settings) for s in sources]
            images = [f.result() for f in futures]
    log.info("decoded %d images in %.3fs", len(images), time.perf_counter() - started)
    return images
