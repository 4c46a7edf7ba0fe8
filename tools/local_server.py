"""Serve a Truss locally with the real Truss inference server (no Docker), on 127.0.0.1.

Steps, as the Docker image would run it (measured with truss 0.18.35):
1. `truss image build-context --non-interactive CONTEXT TRUSS_DIR` writes the image's contents:
   server/ (the inference server), model/, data/, config.yaml (defaults filled in), packages/
   (the contents of every `external_package_dirs` entry), requirements.txt + constraints.txt.
2. Copy server/*, model/, data/ and config.yaml side by side into one folder (the image's /app).
3. Put CONTEXT/packages on PYTHONPATH (the image appends /packages to sys.path).
4. Export the config's `environment_variables` and INFERENCE_SERVER_PORT.
5. Run the server's own main.py there through tools/loopback_main.py, which binds 127.0.0.1
   instead of the hard-coded 0.0.0.0.

    python -m tools.local_server midnight            # serve until Ctrl-C
"""

import argparse
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, Mapping, Optional

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def build_context(truss_dir: Path, context: Path) -> Path:
    """Write the Docker build context of `truss_dir` to `context` (must not exist); return it.

    Raises:
        subprocess.CalledProcessError: `truss image build-context` failed (e.g. invalid config).
    """
    truss_bin = Path(sys.executable).with_name("truss")
    subprocess.run([str(truss_bin), "image", "build-context", "--non-interactive", str(context),
                    str(truss_dir)], check=True, capture_output=True, text=True,
                   env={**os.environ, "TRUSS_CHECK_FOR_UPDATES": "false"})
    return context


def build_server_dir(truss_dir: Path, work_dir: Path) -> Path:
    """Build the Docker context of `truss_dir` and lay it out as the image would; return the dir.

    Raises:
        subprocess.CalledProcessError: `truss image build-context` failed (e.g. invalid config).
    """
    context = build_context(truss_dir, work_dir / "context")
    app = work_dir / "app"
    shutil.copytree(context / "server", app)
    for name in ("model", "data"):
        if (context / name).is_dir():
            shutil.copytree(context / name, app / name)
    shutil.copy(context / "config.yaml", app / "config.yaml")
    if (context / "packages").is_dir():
        shutil.copytree(context / "packages", work_dir / "packages")
    return app


def server_env(app: Path, port: int, extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """Environment of the server process: the truss's environment_variables, then `extra`."""
    config = yaml.safe_load((app / "config.yaml").read_text())
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (config.get("environment_variables") or {}).items()})
    env.update(extra or {})
    packages = app.parent / "packages"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(packages), env.get("PYTHONPATH")) if p)
    env["INFERENCE_SERVER_PORT"] = str(port)
    return env


class LocalTruss:
    """A running local Truss server. Use `serve(...)` to get one."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{port}"
        self.predict_url = f"{self.url}/v1/models/model:predict"

    def predict(self, body: object, timeout: float = 300) -> requests.Response:
        """POST a JSON body to the predict route."""
        return requests.post(self.predict_url, json=body, timeout=timeout)

    def is_ready(self) -> bool:
        """True once load() finished and the readiness route answers 200."""
        try:
            return requests.get(f"{self.url}/v1/models/model", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout_s: float) -> None:
        """Block until ready. Raises RuntimeError (with the server log) if it dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.logs()}")
            if self.is_ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"server not ready after {timeout_s}s:\n{self.logs()[-5000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextlib.contextmanager
def serve(truss_dir: Path, port: int, env: Optional[Mapping[str, str]] = None,
          ready_timeout_s: float = 300, work_dir: Optional[Path] = None) -> Iterator[LocalTruss]:
    """Build, start and wait for a local Truss server on 127.0.0.1:`port`; stop it on exit."""
    own_tmp = work_dir is None
    work = Path(tempfile.mkdtemp(prefix=f"truss-{truss_dir.name}-")) if own_tmp else work_dir
    assert work is not None
    app = build_server_dir(truss_dir, work)
    log_path = work / "server.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen([sys.executable, str(ROOT / "tools" / "loopback_main.py")],
                                   cwd=app, env=server_env(app, port, env), stdout=log_file,
                                   stderr=subprocess.STDOUT)
    server = LocalTruss(process, port, log_path)
    try:
        server.wait_ready(ready_timeout_s)
        log.info("%s ready at %s", truss_dir.name, server.url)
        yield server
    finally:
        server.stop()
        if own_tmp:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    from tools.manifest import load_manifest, prepare_standin

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("truss", help="truss name from the root config.yaml")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    entry = load_manifest()["trusses"][args.truss]
    env = prepare_standin(args.truss)
    # SIGTERM (e.g. `kill`) unwinds like Ctrl-C so the server child is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with serve(ROOT / entry["folder"], args.port or entry["port"], env) as server:
        log.info("serving %s at %s (Ctrl-C to stop); logs: %s", args.truss, server.predict_url,
                 server.log_path)
        try:
            server.process.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
