"""Each Truss serves with only the modules its image installs; `make push-check` passes.

A Truss image installs its own `requirements.txt` plus the Truss server's requirements, nothing
else; this dev venv has everything. For each Truss of the root config.yaml the real Truss server is
started with every module of this venv that the image does not get hidden (`VFM_BLOCKED_MODULES`,
tools/loopback_main.py: imports fail, `find_spec` and `importlib.metadata` find nothing), then
`load()` runs and the manifest's first example must answer 200 with the API's response shape.

What the image gets is derived from its build context: the requirements of `user_requirements.txt`
(the truss's) and `requirements.txt` (the server's) and, through this venv's package metadata,
everything they depend on. A module is hidden unless one of those distributions (or the base
image's pip / setuptools / wheel) provides it. Among the hidden: torch, transformers and
safetensors for Derm; tensorflow and keras for Midnight and SAFE; scipy, scikit-image, pytest, ...
wherever no requirement brings them.

Also here: `make push-check` (tools/push_check.py) itself, which resolves each image's requirements
against PyPI as the image build does (network: PyPI only, about 2 minutes).
"""

import base64
import functools
import importlib.metadata
import io
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Set

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from tools import push_check
from tools.local_server import build_context
from tools.loopback_main import BLOCK_ANNOUNCEMENT, BLOCKED_MODULES_ENV, top_level_modules
from tools.manifest import load_manifest, resolve_example

ROOT = Path(__file__).resolve().parents[1]
TRUSSES = sorted(load_manifest()["trusses"])
HEAVY_MODULES = frozenset({"torch", "transformers", "safetensors", "tensorflow", "keras"})
# The base image's own tooling (it installs pip with get-pip.py): never hidden.
BASE_IMAGE_DISTRIBUTIONS = frozenset({"pip", "setuptools", "wheel"})
# An image distribution this venv has under another name (same release, same dependencies).
DEV_BUILD_OF = {"tensorflow": "tensorflow-cpu"}


def requirements_in(requirements_txt: Path) -> List[Requirement]:
    """The requirements of a pip requirements file (options and comments skipped).

    Raises:
        InvalidRequirement: a line is neither a requirement, an option nor a comment.
    """
    found = []
    for line in requirements_txt.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            found.append(Requirement(line))
    return found


def installed(name: str) -> importlib.metadata.Distribution:
    """This venv's distribution for image distribution `name` (DEV_BUILD_OF applied).

    Raises:
        importlib.metadata.PackageNotFoundError: not installed here (e.g. nvidia-* CUDA wheels).
    """
    name = canonicalize_name(name)
    try:
        return importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return importlib.metadata.distribution(DEV_BUILD_OF.get(name, name))


def dependency_closure(requirements: Iterable[Requirement]) -> Set[str]:
    """Canonical names of the distributions `requirements` install, by this venv's metadata."""
    seen: Set[str] = set()
    todo = list(requirements)
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = installed(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not in this venv, so it cannot be hidden either
        extras = set(requirement.extras) or {""}
        for line in dist.requires or []:
            dependency = Requirement(line)
            if dependency.marker is None or any(dependency.marker.evaluate({"extra": extra})
                                                for extra in extras):
                todo.append(dependency)
    return seen


@functools.lru_cache(maxsize=None)
def hidden_for(name: str) -> FrozenSet[str]:
    """Top-level modules of this venv that truss `name`'s image does not install."""
    folder = ROOT / load_manifest()["trusses"][name]["folder"]
    with tempfile.TemporaryDirectory(prefix=f"readiness-{name}-") as tmp:
        context = build_context(folder, Path(tmp) / "context")
        requirements = (requirements_in(context / "user_requirements.txt")
                        + requirements_in(context / "requirements.txt"))
    provided: Set[str] = set()
    for dist_name in dependency_closure(requirements) | BASE_IMAGE_DISTRIBUTIONS:
        try:
            provided |= top_level_modules(installed(dist_name))
        except importlib.metadata.PackageNotFoundError:
            continue
    everything = set().union(*(top_level_modules(d) for d in importlib.metadata.distributions()))
    return frozenset(everything - provided)


def check_midnight(request: Dict[str, Any], body: Dict[str, Any]) -> None:
    n_images = 1 if "image_base64" in request or "image_url" in request else len(
        request.get("image_base64_list") or request.get("image_urls"))
    shape = body["embedding_shape"]
    assert shape[0] == n_images and body["task"] == request.get("task", "classification")

    def dims(value: Any) -> list:
        return [len(value)] + dims(value[0]) if isinstance(value, list) else []

    assert dims(body["embeddings"]) == shape


def check_derm(request: Dict[str, Any], body: Dict[str, Any]) -> None:
    predictions = body["predictions"]
    assert len(predictions) == len(request["instances"])
    for prediction in predictions:
        assert "error" in prediction or len(prediction["embedding"]) == 6144, prediction
    assert "embedding" in predictions[0]
    assert {"deployedModelId", "model", "modelVersionId", "modelDisplayName"} <= set(body)


def check_safe_detector(request: Dict[str, Any], body: Dict[str, Any]) -> None:
    logprobs = body["logprobs"]
    assert len(logprobs) == 4 and all(math.isfinite(v) and v <= 0 for v in logprobs)
    assert math.isclose(sum(math.exp(v) for v in logprobs), 1.0, abs_tol=1e-4)
    mask = body["localizationMask"]
    assert mask["mediaType"] == "image/png"
    sent = Image.open(io.BytesIO(base64.b64decode(request["image"]["data"])))
    got = Image.open(io.BytesIO(base64.b64decode(mask["data"])))
    assert got.format == "PNG" and got.size == sent.size


RESPONSE_CHECKS: Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], None]] = {
    "midnight": check_midnight, "derm": check_derm, "safe_detector": check_safe_detector}


def test_hidden_modules_follow_each_image_s_requirements():
    assert HEAVY_MODULES & hidden_for("midnight") == {"tensorflow", "keras"}
    assert HEAVY_MODULES & hidden_for("safe_detector") == {"tensorflow", "keras"}
    # keras comes with tensorflow (a dependency), so Derm's image has it.
    assert HEAVY_MODULES & hidden_for("derm") == {"torch", "transformers", "safetensors"}
    for name in TRUSSES:
        hidden = hidden_for(name)
        assert {"pytest", "truss", "gcp_storage_emulator", "mypy"} <= hidden, name
        assert not {"numpy", "PIL", "requests", "uvicorn", "fastapi", "google"} & hidden, name


def test_every_manifest_truss_has_a_response_check():
    assert set(RESPONSE_CHECKS) == set(TRUSSES)


def test_blocked_module_cannot_be_imported_or_found(tmp_path):
    """The real entry point: a main.py run by loopback_main under the block."""
    (tmp_path / "main.py").write_text(
        "import importlib.metadata, importlib.util, json\n"
        "result = {'spec': importlib.util.find_spec('torch') is None,\n"
        "          'json_ok': json.dumps([1]) == '[1]',\n"
        "          'dists': sorted(d.metadata['Name'] for d in importlib.metadata.distributions()\n"
        "                          if d.metadata['Name'] in ('torch', 'safetensors', 'numpy'))}\n"
        "for name in ('torch', 'torch.nn', 'safetensors.torch'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "        result[name] = 'imported'\n"
        "    except ModuleNotFoundError as exc:\n"
        "        result[name] = exc.name\n"
        "print(json.dumps(result))\n")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "loopback_main.py")], cwd=tmp_path,
                         env={BLOCKED_MODULES_ENV: "torch,safetensors", "PATH": ""},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == (
        '{"spec": true, "json_ok": true, "dists": ["numpy"], "torch": "torch", '
        '"torch.nn": "torch", "safetensors.torch": "safetensors"}')
    assert f"{BLOCK_ANNOUNCEMENT} safetensors, torch" in run.stderr


def test_without_the_env_nothing_is_blocked(tmp_path):
    (tmp_path / "main.py").write_text("import safetensors\nprint('imported')\n")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "loopback_main.py")], cwd=tmp_path,
                         env={"PATH": ""}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "imported", run.stderr


@pytest.mark.parametrize("name", TRUSSES)
def test_truss_serves_with_only_what_its_image_installs(name, truss_server_factory):
    blocked = hidden_for(name)
    server = truss_server_factory(name, {BLOCKED_MODULES_ENV: ",".join(sorted(blocked))})
    assert f"{BLOCK_ANNOUNCEMENT} {', '.join(sorted(blocked))}" in server.logs()
    request = resolve_example(load_manifest()["trusses"][name]["examples"][0]["request"])
    response = server.predict(request)
    assert response.status_code == 200, f"{response.text[:2000]}\n{server.logs()[-5000:]}"
    RESPONSE_CHECKS[name](request, response.json())


def test_push_check_checks_builds_from_other_indexes_as_their_pypi_release(tmp_path):
    source = tmp_path / "requirements.txt"
    source.write_text("# comment\n--extra-index-url https://download.pytorch.org/whl/cu126\n"
                      "-i https://pypi.org/simple\ntorch==2.13.0+cu126\nnumpy==1.26.4  # pin\n")
    out = tmp_path / "pypi.txt"
    substituted = push_check.pypi_only(source, out)
    assert substituted == [{"requirement": "torch==2.13.0+cu126", "checked_as": "torch==2.13.0",
                            "indexes": "https://download.pytorch.org/whl/cu126"}]
    assert out.read_text() == ("# comment\n-i https://pypi.org/simple\nnumpy==1.26.4  # pin\n"
                               "torch==2.13.0\n")


def test_push_check_reads_cuda_and_driver_from_the_resolution():
    cu12 = {"tensorflow": "2.21.0", "nvidia-cuda-runtime-cu12": "12.9.79",
            "nvidia-cudnn-cu12": "9.28.0.42"}
    assert push_check.cuda_summary(cu12, []) == {
        "tensorflow": "2.21.0", "cuda": "12.9", "cuda_runtime_wheel": "12.9.79",
        "cudnn_wheel": "9.28.0.42", "cuda_source": "nvidia-* wheels of the resolution",
        "min_driver": "525.60.13"}
    cu13 = {"torch": "2.13.0", "nvidia-cuda-runtime": "13.0.96", "nvidia-cudnn-cu13": "9.20.0.48"}
    assert push_check.cuda_summary(cu13, [])["min_driver"] == "580"
    tagged = [{"requirement": "torch==2.13.0+cu126", "checked_as": "torch==2.13.0",
               "indexes": "https://download.pytorch.org/whl/cu126"}]
    summary = push_check.cuda_summary(cu13, tagged)
    assert (summary["torch"], summary["cuda"], summary["min_driver"]) == (
        "2.13.0+cu126", "12.6", "525.60.13")


def test_push_check_resolves_every_truss_image(tmp_path):
    """The real `make push-check`: every image resolves and needs only a CUDA 12 driver (>= 525)."""
    report_path = tmp_path / "push_check.json"
    assert push_check.main(["--report", str(report_path)]) == 0
    trusses = json.loads(report_path.read_text())["trusses"]
    assert set(trusses) == set(TRUSSES)
    for name, entry in trusses.items():
        assert entry["ok"], entry.get("conflict")
        assert entry["image"]["min_driver"] == "525.60.13", (name, entry["image"])
        for framework in ("torch", "tensorflow"):
            assert (framework in entry["image"]) == (framework not in hidden_for(name))
