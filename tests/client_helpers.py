"""Helpers of the client / `vfm` tests: one shared real Truss server per model, a real loopback
HTTP proxy that counts requests and injects faults, `vfm` as a real subprocess, test images and
a synthetic pyramidal TIFF slide written with tifffile."""

import base64
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
VFM = [sys.executable, "-m", "vfm_client.cli"]
_SERVERS: Dict[str, Any] = {}


def shared_server(factory: Callable, name: str) -> Any:
    """One real Truss server per model for all client tests of the session (private URLs on,
    so Midnight can fetch the loopback image URLs)."""
    if name not in _SERVERS:
        _SERVERS[name] = factory(name, {"VFM_ALLOW_PRIVATE_URLS": "1"})
    return _SERVERS[name]


# -- images -----------------------------------------------------------------------------------
def png(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG")
    return out.getvalue()


def random_pngs(count: int, seed: int = 0, side: Tuple[int, int] = (40, 72)) -> List[bytes]:
    """`count` distinct small PNGs of random sizes."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        h, w = rng.integers(side[0], side[1], size=2)
        out.append(png(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)))
    return out


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def embed_direct(url: str, images: Sequence[bytes], task: str = "classification") -> np.ndarray:
    """Embeddings of images sent one per request with plain `requests`, JSON floats: the
    reference the client's results are compared with (independent of the client)."""
    out = []
    for data in images:
        reply = requests.post(url, json={"image_base64": b64(data), "task": task}, timeout=120)
        reply.raise_for_status()
        out.append(np.asarray(reply.json()["embeddings"], dtype=np.float32)[0])
    return np.stack(out)


# -- a real loopback proxy ----------------------------------------------------------------------
class Proxy:
    """HTTP proxy on 127.0.0.1 in front of one upstream predict URL.

    Records every POST (arrival time, headers, parsed JSON body). `script` is consumed one
    action per request: "pass", "drop" (read the request, close the socket, no answer),
    (status, headers) or (status, headers, body) (answer that status with that JSON body, by
    default an error body), ("delay", seconds) (wait, then pass). When it is empty, `default`
    applies ("pass" unless set). `rule(body)` may return an action for a request too (checked
    after the script).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.script: List[Any] = []
        self.default: Any = "pass"
        self.rule: Optional[Callable[[Any], Any]] = None
        self.records: List[Dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with outer.lock:
                    outer.records.append({"time": time.monotonic(), "headers": dict(self.headers),
                                          "body": body, "bytes": len(raw)})
                    action = outer.script.pop(0) if outer.script else None
                if action is None and outer.rule is not None:
                    action = outer.rule(body)
                if action is None:
                    action = outer.default
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(action, tuple) and action[0] == "delay":
                    time.sleep(action[1])
                    action = "pass"
                if action == "pass":
                    reply = requests.post(outer.upstream, data=raw, timeout=300, headers={
                        "Content-Type": self.headers.get("Content-Type", "application/json")})
                    self._send(reply.status_code, reply.content, {})
                    return
                status, headers = action[0], action[1]
                payload = action[2] if len(action) > 2 else {"error": {
                    "code": f"injected_{status}", "message": "injected by the test proxy"}}
                self._send(status, json.dumps(payload).encode(), headers)

            def _send(self, status: int, payload: bytes, headers: Dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/models/model:predict"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self) -> List[Any]:
        with self.lock:
            return [r["body"] for r in self.records]

    def reset(self) -> None:
        with self.lock:
            self.records.clear()
            self.script.clear()
            self.rule = None
            self.default = "pass"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def images_sent(body: Any) -> List[str]:
    """The base64 images / URLs of one recorded request (Midnight, Derm or SAFE shape)."""
    if not isinstance(body, dict):
        return []
    for field in ("image_base64_list", "image_urls"):
        if field in body:
            return list(body[field])
    if "instances" in body:
        return [i.get("input_bytes") or i.get("gcs_uri") for i in body["instances"]]
    if "image" in body:
        return [body["image"]["data"]]
    return []


# -- the command --------------------------------------------------------------------------------
def run_vfm(args: Sequence[str], cwd: Optional[Path] = None, env: Optional[Dict[str, str]] = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`vfm ARGS` as a real subprocess (the console script's module); returns the result."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*VFM, *args, "--no-progress"] if args and args[0] != "--version"
                          else [*VFM, *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, check=False)


# -- a synthetic whole-slide image -------------------------------------------------------------
TISSUE_RGB = (200, 80, 170)


def write_slide(path: Path, width: int, height: int, mpp: Optional[float],
                tissue: Tuple[int, int, int, int], seed: int = 0, levels: int = 3
                ) -> List[np.ndarray]:
    """A tiled pyramidal TIFF (zlib, lossless): white-ish background, one textured pink tissue
    rectangle (x0, y0, x1, y1) at level 0, each level half the previous (2x2 box mean).
    Resolution tags in pixels per centimetre give `mpp` (none if mpp is None). Returns the
    level arrays exactly as written."""
    import tifffile

    rng = np.random.default_rng(seed)
    level0 = np.full((height, width, 3), 243, dtype=np.uint8)
    x0, y0, x1, y1 = tissue
    noise = rng.integers(-30, 31, (y1 - y0, x1 - x0, 3))
    level0[y0:y1, x0:x1] = np.clip(np.asarray(TISSUE_RGB) + noise, 0, 255).astype(np.uint8)
    arrays = [level0]
    for _ in range(1, levels):
        prev = arrays[-1].astype(np.uint16)
        h, w = prev.shape[0] // 2, prev.shape[1] // 2
        prev = prev[:2 * h, :2 * w]
        arrays.append(((prev[0::2, 0::2] + prev[1::2, 0::2] + prev[0::2, 1::2]
                        + prev[1::2, 1::2] + 2) // 4).astype(np.uint8))
    with tifffile.TiffWriter(path) as tif:
        for i, array in enumerate(arrays):
            extra: Dict[str, Any] = {}
            if mpp is not None:
                per_cm = 1e4 / (mpp * 2 ** i)
                extra = {"resolution": (per_cm, per_cm), "resolutionunit": "CENTIMETER"}
            tif.write(array, tile=(128, 128), photometric="rgb", compression="zlib",
                      subfiletype=0 if i == 0 else 1, **extra)
    return arrays
