"""Each Truss serves with only the heavy modules its own requirements.txt installs in its image.

A Truss image installs the Truss server's requirements plus that Truss's `requirements.txt`, nothing
else; this dev venv has everything. For each Truss of the root config.yaml the real Truss server is
started with every heavy ML module its requirements do not name hidden
(`VFM_BLOCKED_MODULES`, tools/loopback_main.py: imports fail, `find_spec` finds nothing), then
`load()` runs and the manifest's first example must answer 200 with the API's response shape.

Only direct requirements count as provided, so the check is stricter than the image (Derm's image
gets keras as a dependency of tensorflow, yet keras is hidden here): a pass is conclusive.

Also here: `make push-check` (tools/push_check.py) itself, which resolves each image's requirements
against PyPI as the image build does (network: PyPI only, about 2 minutes).
"""

import base64
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, FrozenSet

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from PIL import Image

from tools import push_check
from tools.loopback_main import BLOCK_ANNOUNCEMENT, BLOCKED_MODULES_ENV
from tools.manifest import load_manifest, resolve_example

ROOT = Path(__file__).resolve().parents[1]
TRUSSES = sorted(load_manifest()["trusses"])
# Top-level modules of the heavy ML distributions (distribution name == module name for these).
HEAVY_MODULES = frozenset({"torch", "transformers", "safetensors", "tensorflow", "keras"})


def requirement_names(requirements_txt: Path) -> FrozenSet[str]:
    """Canonical distribution names a pip requirements file asks for (options, comments skipped).

    Raises:
        InvalidRequirement: a line is neither a requirement, an option nor a comment.
    """
    names = set()
    for line in requirements_txt.read_text().splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        names.add(canonicalize_name(Requirement(line).name))
    return frozenset(names)


def truss_requirements_file(name: str) -> Path:
    """The truss's requirements_file, as its config.yaml names it."""
    folder = ROOT / load_manifest()["trusses"][name]["folder"]
    config = yaml.safe_load((folder / "config.yaml").read_text())
    return folder / config["requirements_file"]


def blocked_for(name: str) -> FrozenSet[str]:
    """Heavy modules that truss `name`'s own requirements.txt does not install."""
    provided = requirement_names(truss_requirements_file(name))
    return frozenset(m for m in HEAVY_MODULES if canonicalize_name(m) not in provided)


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


def test_requirements_parsing_finds_what_each_truss_installs():
    assert blocked_for("midnight") == {"tensorflow", "keras"}
    assert blocked_for("safe_detector") == {"tensorflow", "keras"}
    assert blocked_for("derm") == {"torch", "transformers", "safetensors", "keras"}


def test_every_manifest_truss_has_a_response_check():
    assert set(RESPONSE_CHECKS) == set(TRUSSES)


def test_blocked_module_cannot_be_imported_or_found(tmp_path):
    """The real entry point: a main.py run by loopback_main under the block."""
    (tmp_path / "main.py").write_text(
        "import importlib.util, json\n"
        "result = {'spec': importlib.util.find_spec('torch') is None,\n"
        "          'json_ok': json.dumps([1]) == '[1]'}\n"
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
        '{"spec": true, "json_ok": true, "torch": "torch", "torch.nn": "torch", '
        '"safetensors.torch": "safetensors"}')
    assert f"{BLOCK_ANNOUNCEMENT} safetensors, torch" in run.stderr


def test_without_the_env_nothing_is_blocked(tmp_path):
    (tmp_path / "main.py").write_text("import safetensors\nprint('imported')\n")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "loopback_main.py")], cwd=tmp_path,
                         env={"PATH": ""}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "imported", run.stderr


@pytest.mark.parametrize("name", TRUSSES)
def test_truss_serves_with_only_its_own_heavy_modules(name, truss_server_factory):
    blocked = blocked_for(name)
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
        heavy = blocked_for(name)
        for framework in ("torch", "tensorflow"):
            assert (framework in entry["image"]) == (framework not in heavy), (name, framework)
