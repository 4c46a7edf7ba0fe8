"""Client of the Derm Foundation Truss (Vertex AI shape): images -> 6144-d embeddings, with
Vertex's per-instance errors kept per item."""

from typing import Any, Dict, List, Optional, Sequence

from vfm_client.base import BaseClient, Entry
from vfm_client.decoding import decode_vector
from vfm_client.errors import ItemError
from vfm_client.images import ImageItem, b64encode
from vfm_client.results import Outcome, Results
from vfm_client.transport import Reply


class DermClient(BaseClient):
    """`embed(images, gcs_token=...) -> Results` (embeddings with per-item errors).

    Images: paths, bytes, PIL images, numpy arrays, `gs://bucket/object` URIs (the server
    downloads them with `gcs_token` as the OAuth bearer token, or anonymously), and http(s)
    URLs (downloaded by the client: the Vertex API takes bytes or GCS only). Compact encodings
    go in Vertex's `parameters` object. See BaseClient for the constructor arguments.
    """

    api = "derm"

    def embed(self, images: Sequence[Any], gcs_token: Optional[str] = None,
              progress: bool = False) -> Results:
        """Every image's 6144-d embedding or error, in input order.

        Raises:
            RunError: unreachable server, rejected key / URL.
        """
        return self.results(images, self.options(gcs_token), progress)

    @staticmethod
    def options(gcs_token: Optional[str] = None) -> Dict[str, Any]:
        """Request options for `iter_outcomes`."""
        return {"gcs_token": gcs_token}

    def _group(self, item: ImageItem) -> str:
        return "any"

    def _size(self, item: ImageItem) -> int:
        # URLs are fetched at send time: their size is unknown here; an oversized body is
        # split before sending.
        return item.base64_size() + 32

    def _payload(self, item: ImageItem, options: Dict[str, Any]) -> str:
        if item.kind == "gcs":
            return str(item.value)
        if item.kind == "url":
            return b64encode(self.transport.get_bytes(str(item.value)))
        return b64encode(item.read())

    def _body(self, entries: List[Entry], options: Dict[str, Any], compact: bool
              ) -> Dict[str, Any]:
        instances: List[Dict[str, Any]] = []
        for entry in entries:
            if entry.payload.startswith("gs://"):
                instance = {"gcs_uri": entry.payload}
                if options.get("gcs_token"):
                    instance["bearer_token"] = options["gcs_token"]
                instances.append(instance)
            else:
                instances.append({"input_bytes": entry.payload})
        body: Dict[str, Any] = {"instances": instances}
        if compact:
            body["parameters"] = {"encoding_format": "base64",
                                  "embedding_dtype": self.embedding_dtype}
        return body

    def _decode(self, body: Any, entries: List[Entry], options: Dict[str, Any]
                ) -> Dict[int, Outcome]:
        predictions = body["predictions"]
        if len(predictions) != len(entries):
            raise ValueError(f"{len(predictions)} predictions for {len(entries)} instances")
        model_id = str(body.get("model"))
        out: Dict[int, Outcome] = {}
        for entry, prediction in zip(entries, predictions, strict=True):
            if "error" in prediction:
                err = prediction["error"]
                out[entry.index] = Outcome(error=ItemError(str(err.get("code")),
                                                           str(err.get("description"))))
            else:
                if isinstance(prediction["embedding"], str):
                    self._set_compact(True)
                out[entry.index] = Outcome(
                    value=decode_vector(prediction["embedding"], self.embedding_dtype),
                    model_id=model_id)
        return out

    def _refuses_compact(self, reply: Reply, code: str, message: str) -> bool:
        return reply.status == 400 and code == "invalid_request" and "parameters" in message
