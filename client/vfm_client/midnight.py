"""Client of the Midnight Truss: images -> embeddings ([N, 2*hidden] or [N, hidden, g, g])."""

from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from vfm_client.base import BaseClient, Entry, Prepared
from vfm_client.decoding import decode_midnight
from vfm_client.errors import ItemError
from vfm_client.images import ImageItem, b64encode
from vfm_client.results import Outcome, Results
from vfm_client.transport import Reply

TASKS = ("classification", "segmentation")


class MidnightClient(BaseClient):
    """`embed(images, task=...) -> numpy array` against a Midnight deployment or local server.

    Images: paths, bytes, PIL images, numpy arrays, http(s) URLs (the server downloads those;
    URLs and inline images go in separate requests). Requests hold at most `max_items` images
    (default 32) and `max_bytes` of JSON; `concurrency` requests run at once. See BaseClient
    for the constructor arguments and the error rules.
    """

    api = "midnight"

    def __init__(self, url: str, api_key: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(url, api_key, **kwargs)
        #: the last 200 response's fields other than the embeddings (model_id, input_size, ...)
        self.info: Dict[str, Any] = {}

    def embed(self, images: Sequence[Any], task: str = "classification",
              batch_size: Optional[int] = None, progress: bool = False) -> np.ndarray:
        """Embeddings in input order: float32 [N, 2*hidden] (classification) or
        [N, hidden, g, g] (segmentation).

        Raises:
            PartialFailureError: some images failed (`.results` has every outcome, errors included).
            RunError: the run could not proceed (unreachable server, rejected key).
            ValueError: unknown task.
        """
        return self.embed_results(images, task, batch_size, progress).raise_for_errors().array()

    def embed_results(self, images: Sequence[Any], task: str = "classification",
                      batch_size: Optional[int] = None, progress: bool = False) -> Results:
        """Every image's embedding or error, in input order; never raises for one item.

        Raises:
            RunError, ValueError: as `embed`.
        """
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}")
        return self.results(images, self.options(task, batch_size), progress)

    @staticmethod
    def options(task: str = "classification", batch_size: Optional[int] = None
                ) -> Dict[str, Any]:
        """Request options for `iter_outcomes`."""
        return {"task": task, "batch_size": batch_size}

    def prepare(self, images: Sequence[Any]) -> List[Prepared]:
        """As BaseClient.prepare; gs:// URIs become `unsupported_input` errors (Derm only)."""
        return [ItemError("unsupported_input", "gs:// URIs are for Derm; Midnight takes "
                          "http(s) URLs, files and in-memory images")
                if isinstance(p, ImageItem) and p.kind == "gcs" else p
                for p in super().prepare(images)]

    def _group(self, item: ImageItem) -> str:
        return "url" if item.kind == "url" else "inline"

    def _payload(self, item: ImageItem, options: Dict[str, Any]) -> str:
        if item.kind == "url":
            return str(item.value)
        if item.kind == "gcs":
            raise ValueError("gs:// URIs are not supported by the Midnight API (Derm only)")
        return b64encode(item.read())

    def _body(self, entries: List[Entry], options: Dict[str, Any], compact: bool
              ) -> Dict[str, Any]:
        field = "image_urls" if entries[0].group == "url" else "image_base64_list"
        body: Dict[str, Any] = {field: [e.payload for e in entries], "task": options["task"]}
        if options.get("batch_size") is not None:
            body["batch_size"] = options["batch_size"]
        if compact:
            body["encoding_format"] = "base64"
            body["embedding_dtype"] = self.embedding_dtype
        return body

    def _decode(self, body: Any, entries: List[Entry], options: Dict[str, Any]
                ) -> Dict[int, Outcome]:
        arrays = decode_midnight(body, len(entries), self.embedding_dtype)
        if body.get("encoding_format") == "base64":
            self._set_compact(True)
        self.info = {k: v for k, v in body.items() if k != "embeddings"}
        model_id = str(body.get("model_id"))
        return {e.index: Outcome(value=a, model_id=model_id)
                for e, a in zip(entries, arrays, strict=True)}

    def _refuses_compact(self, reply: Reply, code: str, message: str) -> bool:
        return reply.status == 400 and code == "invalid_request" and (
            "encoding_format" in message or "embedding_dtype" in message)
