"""Client of the SAFE detector Truss: image -> label, log-probs, localization mask."""

import base64
import dataclasses
import io
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from vfm_client.base import BaseClient, Entry
from vfm_client.errors import PartialFailureError
from vfm_client.images import ImageItem, b64encode, media_type, png_bytes
from vfm_client.results import Outcome

LABELS = ("Natural", "FullySynthesized", "LocallyEdited", "LocallySynthesized")


@dataclasses.dataclass
class Detection:
    """One image's verdict. `logprobs` [4] (natural log, LABELS order); `label` its argmax;
    `mask` bool [H, W] aligned with the image's stored pixels (None if the server sent none)."""

    label: str
    logprobs: np.ndarray
    mask: Optional[np.ndarray]


class SafeClient(BaseClient):
    """`detect(image) -> Detection`; `detect_many(images)` runs `concurrency` at once.

    One image per request (the challenge API). JPEG and PNG bytes are sent as they are; other
    formats (TIFF, WebP, arrays, PIL images) as lossless PNG. See BaseClient for the arguments.
    """

    api = "safe"

    def __init__(self, url: str, api_key: Optional[str] = None, **kwargs: Any) -> None:
        kwargs["max_items"] = 1
        kwargs.setdefault("encoding", "float")
        super().__init__(url, api_key, **kwargs)

    def detect(self, image: Any) -> Detection:
        """Detect edits in one image.

        Raises:
            PartialFailureError: the server (or the client) refused the image;
                `.results[0]` says why.
            RunError: unreachable server, rejected key / URL.
        """
        outcome = next(iter(self.iter_detections([image])))[1]
        if outcome.error is not None:
            raise PartialFailureError([outcome], 1, 1)
        return outcome.value

    def iter_detections(self, images: Sequence[Any], indices: Optional[Sequence[int]] = None,
                        on_done: Optional[Callable[[int], None]] = None
                        ) -> Iterator[Tuple[int, Outcome]]:
        """Yield (index, Outcome with a Detection) in input order."""
        prepared = self.prepare(images)
        for _, chunk in self.iter_outcomes(prepared, {}, indices, on_done):
            for i in sorted(chunk):
                yield i, chunk[i]

    def detect_many(self, images: Sequence[Any]) -> List[Outcome]:
        """Every image's Outcome (Detection or error), in input order."""
        return [outcome for _, outcome in self.iter_detections(images)]

    def _group(self, item: ImageItem) -> str:
        return "image"

    def _payload(self, item: ImageItem, options: Dict[str, Any]) -> str:
        data = self.transport.get_bytes(str(item.value)) if item.kind == "url" else item.read()
        if media_type(data) is None:
            try:
                with Image.open(io.BytesIO(data)) as image:
                    data = png_bytes(image)
            except (OSError, Image.DecompressionBombError) as exc:
                raise ValueError(f"not an image Pillow can read: {exc}") from exc
        return b64encode(data)

    def _body(self, entries: List[Entry], options: Dict[str, Any], compact: bool
              ) -> Dict[str, Any]:
        (entry,) = entries
        head = base64.b64decode(entry.payload[:16])
        return {"image": {"mediaType": media_type(head) or "image/png", "data": entry.payload}}

    def _decode(self, body: Any, entries: List[Entry], options: Dict[str, Any]
                ) -> Dict[int, Outcome]:
        logprobs = np.asarray(body["logprobs"], dtype=np.float64)
        mask = None
        if body.get("localizationMask"):
            mask = decode_mask(body["localizationMask"]["data"])
        detection = Detection(LABELS[int(np.argmax(logprobs))], logprobs, mask)
        return {entries[0].index: Outcome(value=detection)}


def decode_mask(data: str) -> np.ndarray:
    """Base64 PNG mask -> bool [H, W] (non-zero = edited).

    Raises:
        ValueError: not a decodable PNG.
    """
    try:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            return np.asarray(image.convert("L")) > 0
    except OSError as exc:
        raise ValueError(f"localizationMask is not a PNG: {exc}") from exc
