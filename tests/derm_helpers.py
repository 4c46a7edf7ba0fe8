"""Derm test helpers: a real GCS emulator on loopback, an auth-checking GCS front that records
request headers, the stand-in SavedModel's own output for given bytes, and test images."""

import http.server
import threading
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import requests

from images_for_tests import encode, photo
from tools.local_server import free_port


class GcsEmulator:
    """`gcp-storage-emulator` (in memory) on 127.0.0.1, filled via the google-cloud-storage
    client."""

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = create_server("127.0.0.1", self.port, in_memory=True)
        self.server.start()

    def upload(self, bucket: str, name: str, data: bytes, content_type: str) -> str:
        """Store `data` as gs://bucket/name (bucket created if missing); return the gs:// URI."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project="derm-tests", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": self.url})
        target = client.lookup_bucket(bucket) or client.create_bucket(bucket)
        target.blob(name).upload_from_string(data, content_type=content_type)
        return f"gs://{bucket}/{name}"

    def stop(self) -> None:
        self.server.stop()


class GcsAuthFront:
    """A real HTTP server on 127.0.0.1 in front of the emulator, acting as GCS for the Truss.

    Records every request's path and headers. Buckets in `private` need
    `Authorization: Bearer <token>` with the right token (else 401/403, like GCS); everything
    else is proxied unchanged to the emulator, whose status and body are passed back.
    """

    def __init__(self, upstream: str, private: Dict[str, str]) -> None:
        self.upstream = upstream
        self.private = private  # bucket -> the token it accepts
        self.requests: List[Tuple[str, Dict[str, str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, dict(self.headers)))
                status, body = outer.answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading (size cap): expected

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, authorization: Optional[str]) -> Tuple[int, bytes]:
        """(status, body) for one GET: auth check for private buckets, then the emulator's
        answer."""
        parts = path.split("/")  # "", download, storage, v1, b, BUCKET, o, OBJECT?alt=media
        bucket = parts[5] if len(parts) > 5 else ""
        if bucket in self.private:
            if authorization is None:
                return 401, b'{"error": {"code": 401}}'
            if authorization != f"Bearer {self.private[bucket]}":
                return 403, b'{"error": {"code": 403}}'
        upstream = requests.get(self.upstream + path, timeout=10)
        return upstream.status_code, upstream.content

    def headers_for(self, fragment: str) -> List[Dict[str, str]]:
        """Headers of every recorded request whose path contains `fragment`."""
        return [headers for path, headers in self.requests if fragment in path]

    def stop(self) -> None:
        self.server.shutdown()


class StandInReference:
    """The stand-in SavedModel loaded in the test process: its own output for given bytes."""

    def __init__(self, directory: str) -> None:
        import tensorflow as tf

        self._tf = tf
        self._loaded = tf.saved_model.load(directory)
        self._fn = self._loaded.signatures["serving_default"]

    def embed(self, image_bytes: bytes) -> np.ndarray:
        """float32 [6144]: the signature called on one Example holding `image_bytes` unchanged."""
        tf = self._tf
        example = tf.train.Example(features=tf.train.Features(feature={
            "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes]))}))
        inputs = tf.constant([example.SerializeToString()])
        return self._fn(inputs=inputs)["embedding"].numpy()[0]


def sample_images() -> Dict[str, bytes]:
    """Distinct real photos in the formats clients send (PNG, JPEG), plus WebP."""
    return {
        "astronaut_png": encode(photo("astronaut", (256, 256)), "PNG"),
        "coffee_jpeg": encode(photo("coffee", (300, 200)), "JPEG", quality=90),
        "chelsea_png": encode(photo("chelsea", (200, 180)), "PNG"),
        "rocket_jpeg": encode(photo("rocket", (160, 240)), "JPEG", quality=85),
        "cat_webp": encode(photo("cat", (128, 128)), "WEBP"),
        "camera_png_448": encode(photo("camera", (448, 448)), "PNG"),
    }


def poison_tiff() -> bytes:
    """A TIFF: Pillow decodes it fully (passes the pre-check); tf.io.decode_image rejects it."""
    return encode(photo("chelsea", (96, 96)), "TIFF")


def truncated_png() -> bytes:
    """A PNG cut in half: the header reads, the pixel data is corrupt."""
    data = encode(photo("astronaut", (256, 256)), "PNG")
    return data[: len(data) // 2]


def tokens_in(text: str, tokens: Set[str]) -> Set[str]:
    """Which of `tokens` occur in `text`."""
    return {t for t in tokens if t in text}
