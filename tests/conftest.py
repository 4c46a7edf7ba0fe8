"""Shared fixtures: real loopback HTTP servers and real local Truss servers.

Nothing here mocks the thing under test: Truss servers are the real inference server running the
real model.py in a subprocess; image URLs are served by a real HTTP server on 127.0.0.1.
"""

import http.server
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

from tools.local_server import free_port

ROOT = Path(__file__).resolve().parents[1]


class LoopbackFiles:
    """A real HTTP server on 127.0.0.1 serving in-memory files; records request headers."""

    def __init__(self) -> None:
        self.files: Dict[str, Tuple[int, bytes, str]] = {}
        self.requests: List[Tuple[str, Dict[str, str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append((self.path, dict(self.headers)))
                status, body, ctype = outer.files.get(self.path, (404, b"not found", "text/plain"))
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, path: str, body: bytes, status: int = 200,
            content_type: str = "application/octet-stream") -> str:
        """Serve `body` at `path`; return its full URL."""
        self.files[path] = (status, body, content_type)
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def loopback_files() -> Iterator[LoopbackFiles]:
    server = LoopbackFiles()
    yield server
    server.close()


@pytest.fixture(scope="session")
def truss_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable]:
    """start(name, env_overrides) -> a running tools.local_server.LocalTruss for a manifest truss.

    The stand-in checkpoint is generated (or reused) first; servers stop at session end.
    `VFM_ALLOW_PRIVATE_URLS=1` is a default (test images are served on loopback, which the SSRF
    guard refuses otherwise); pass `env={"VFM_ALLOW_PRIVATE_URLS": "0"}` to test the guard.
    """
    import contextlib

    from tools.local_server import serve
    from tools.manifest import load_manifest, prepare_standin

    stack = contextlib.ExitStack()

    def start(name: str, env: Dict[str, str] = None):  # type: ignore[assignment]
        entry = load_manifest()["trusses"][name]
        full_env = {"VFM_ALLOW_PRIVATE_URLS": "1", **prepare_standin(name), **(env or {})}
        work = tmp_path_factory.mktemp(f"truss-{name}")
        return stack.enter_context(serve(ROOT / entry["folder"], free_port(), full_env,
                                         work_dir=work))

    yield start
    stack.close()


@pytest.fixture(scope="module")
def midnight(truss_server_factory: Callable) -> Any:
    """The real Midnight Truss server that the client and `vfm` CLI tests share (one per session,
    private URLs allowed: client_helpers.shared_server). Test files that need a Midnight server
    with other settings define their own `midnight` fixture."""
    from client_helpers import shared_server

    return shared_server(truss_server_factory, "midnight")


@pytest.fixture()
def proxy(midnight: Any) -> Iterator[Any]:
    """A recording, scriptable client_helpers.Proxy in front of `midnight`, closed after the
    test."""
    from client_helpers import Proxy

    front = Proxy(midnight.predict_url)
    yield front
    front.close()
