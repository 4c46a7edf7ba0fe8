"""Resolve each Truss image's Python requirements the way its Docker build does; report conflicts.

    python -m tools.push_check [midnight ...]        # make push-check; needs PyPI, ~1-2 min

For every truss of the root config.yaml:
1. `truss image build-context` writes the Docker context. Its Dockerfile starts from
   `baseten/truss-server-base:3.11-gpu-*` and installs Python packages in two steps:
       uv pip install -r user_requirements.txt -c constraints.txt   # the truss's requirements.txt
       uv pip install -r requirements.txt      -c constraints.txt   # the Truss server's own pins
2. Both steps are resolved here with `pip install --dry-run --report` against PyPI for the image's
   platform (CPython 3.11, manylinux x86_64 up to glibc `IMAGE_GLIBC`, wheels only), installing
   nothing:
     step 1: user_requirements.txt + constraints.txt;
     step 2: requirements.txt + constraints.txt, with step 1's versions pinned as constraints
             (the second `uv pip install` keeps an installed package that satisfies it, so if step
             2 cannot resolve around step 1's versions, the build would change packages step 1
             installed for the truss: reported as a conflict).
   An index other than PyPI named in a requirements file (e.g. PyTorch's CUDA 12.6 wheels) is not
   reachable from the build machines: its pinned build `NAME==V+TAG` is checked as PyPI's `NAME==V`
   and listed under `substituted`, so everything else is still resolved for real.
3. From the resolution: torch / tensorflow versions, the CUDA runtime and cuDNN wheels the image
   gets, and the NVIDIA driver that CUDA version needs.

Writes bench/results/push_check.json; exits 1 if any truss has a conflict.
"""

import argparse
import concurrent.futures
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from tools.local_server import ROOT, build_context
from tools.manifest import load_manifest

log = logging.getLogger("push_check")

REPORT_PATH = ROOT / "bench" / "results" / "push_check.json"
PYPI = "https://pypi.org/simple"
PYTHON_VERSION = "3.11"  # baseten/truss-server-base:3.11-gpu-*
# Highest glibc assumed for the base image. Truss's published GPU base image template starts from
# nvidia/cuda:*-ubuntu20.04 (glibc 2.31); wheels tagged for a newer glibc would not install there.
IMAGE_GLIBC = (2, 31)
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(IMAGE_GLIBC[1], 16, -1)] + [
    "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
# Minimum Linux driver per CUDA major version with CUDA minor-version compatibility (NVIDIA,
# "CUDA Compatibility: Minor Version Compatibility": 12.x >= 525, 13.x >= 580).
MIN_DRIVER_BY_CUDA_MAJOR = {12: "525.60.13", 13: "580"}
FRAMEWORKS = ("torch", "tensorflow")
INDEX_OPTIONS = ("-i", "--index-url", "--extra-index-url", "-f", "--find-links")
# pip settings that would change what is resolved (this machine's own index, constraints, ...)
# are dropped; only connection settings pass through.
PIP_ENV_KEPT = {"PIP_CERT", "PIP_CLIENT_CERT", "PIP_DEFAULT_TIMEOUT", "PIP_TIMEOUT", "PIP_RETRIES",
                "PIP_PROXY", "PIP_CACHE_DIR", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}


class ResolutionError(Exception):
    """pip could not resolve a requirement set (the message holds pip's explanation)."""


def pypi_only(requirements_txt: Path, out: Path) -> List[Dict[str, str]]:
    """Copy `requirements_txt` to `out` with non-PyPI indexes removed; return the substitutions.

    A requirement pinned to a local build (`torch==2.13.0+cu126`) from such an index becomes
    `torch==2.13.0`. Returns [{"requirement", "checked_as", "indexes"}].

    Raises:
        InvalidRequirement: a line is neither an option, a comment nor a requirement.
    """
    lines, foreign, pinned_builds = [], [], []
    for raw in requirements_txt.read_text().splitlines():
        line = raw.split(" #", 1)[0].strip()
        option, _, value = line.replace("=", " ", 1).partition(" ")
        if option in INDEX_OPTIONS:
            if value.strip().rstrip("/") != PYPI:
                foreign.append(value.strip())
                continue
        elif line and not line.startswith(("#", "-")):
            requirement = Requirement(line)
            local = [s for s in requirement.specifier if s.operator == "==" and "+" in s.version]
            if local:
                pinned_builds.append((line, requirement, local[0].version))
                continue
        lines.append(raw)
    substitutions = []
    for line, requirement, version in pinned_builds:
        checked_as = f"{requirement.name}=={version.split('+', 1)[0]}"
        lines.append(checked_as)
        substitutions.append({"requirement": line, "checked_as": checked_as,
                              "indexes": ", ".join(foreign) or "(none named)"})
    out.write_text("\n".join(lines) + "\n")
    return substitutions


def pip_env() -> Dict[str, str]:
    """This process's environment without pip configuration (files and PIP_* variables)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") or k in PIP_ENV_KEPT}
    env["PIP_CONFIG_FILE"] = os.devnull  # pip then reads no configuration file at all
    return env


def resolve(requirements: List[Path], constraints: List[Path], report: Path) -> Dict[str, str]:
    """Resolve like `pip install` for the image platform, installing nothing; {name: version}.

    Raises:
        ResolutionError: no consistent set of versions exists (pip's message attached).
    """
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--progress-bar", "off", "--report", str(report), "--python-version", PYTHON_VERSION,
               "--implementation", "cp", "--only-binary=:all:", "--index-url", PYPI]
    for platform in PLATFORMS:
        command += ["--platform", platform]
    for path in requirements:
        command += ["-r", str(path)]
    for path in constraints:
        command += ["-c", str(path)]
    run = subprocess.run(command, capture_output=True, text=True, env=pip_env())
    if run.returncode != 0:  # pip explains a conflict on stdout ("The conflict is caused by")
        lines = [line for line in (run.stdout + run.stderr).splitlines()
                 if line.strip() and not line.startswith(("Collecting ", "  Downloading "))]
        raise ResolutionError("\n".join(lines[-40:]))
    installed = json.loads(report.read_text())["install"]
    return {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"]
            for item in installed}


def cuda_summary(packages: Dict[str, str], substitutions: List[Dict[str, str]]) -> Dict[str, Any]:
    """Framework versions, CUDA runtime / cuDNN wheels and the driver they need, from a resolution.

    A framework checked as a substitute reports the CUDA version of its build tag (`+cu126` ->
    12.6); the nvidia-* wheels of its PyPI stand-in are then not what the image gets.
    """
    summary: Dict[str, Any] = {}
    tagged = {}
    for item in substitutions:
        requirement = Requirement(item["requirement"])
        version = next(s.version for s in requirement.specifier if s.operator == "==")
        tagged[canonicalize_name(requirement.name)] = version
    for framework in FRAMEWORKS:
        if framework in tagged:
            summary[framework] = tagged[framework]
        elif framework in packages:
            summary[framework] = packages[framework]
    tag_match = next((re.search(r"\+cu(\d+)(\d)$", v) for v in tagged.values()
                      if re.search(r"\+cu\d+$", v)), None)
    if tag_match:
        summary["cuda"] = f"{tag_match.group(1)}.{tag_match.group(2)}"
        summary["cuda_source"] = "build tag of the pinned wheel (its nvidia-* wheels not resolved)"
    else:
        runtime = next((v for n, v in sorted(packages.items())
                        if re.fullmatch(r"nvidia-cuda-runtime(-cu\d+)?", n)), None)
        cudnn = next((v for n, v in sorted(packages.items())
                      if re.fullmatch(r"nvidia-cudnn(-cu\d+)?", n)), None)
        if runtime is None:
            return summary
        summary["cuda"] = ".".join(runtime.split(".")[:2])
        summary["cuda_runtime_wheel"] = runtime
        summary["cudnn_wheel"] = cudnn
        summary["cuda_source"] = "nvidia-* wheels of the resolution"
    major = int(summary["cuda"].split(".")[0])
    summary["min_driver"] = MIN_DRIVER_BY_CUDA_MAJOR.get(major, "unknown")
    return summary


def check_truss(name: str, folder: Path, work: Path) -> Dict[str, Any]:
    """Build `name`'s context and resolve its two install steps; the truss's report entry."""
    started = time.monotonic()
    context = build_context(folder, work / "context")
    user = work / "user_requirements.pypi.txt"
    substitutions = pypi_only(context / "user_requirements.txt", user)
    server = context / "requirements.txt"
    constraints = context / "constraints.txt"
    entry: Dict[str, Any] = {"ok": False, "substituted": substitutions}
    try:
        step1 = resolve([user], [constraints], work / "step1.json")
    except ResolutionError as exc:
        entry["conflict"] = {"step": "1: truss requirements + server constraints",
                             "pip": str(exc)}
        return entry
    pins = work / "step1_pins.txt"
    pins.write_text("".join(f"{n}=={v}\n" for n, v in sorted(step1.items())))
    try:
        step2 = resolve([server], [constraints, pins], work / "step2.json")
    except ResolutionError as exc:
        entry["conflict"] = {"step": "2: server requirements around step 1's versions",
                             "pip": str(exc)}
        return entry
    packages = {**step1, **step2}
    entry.update(ok=True, image=cuda_summary(packages, substitutions),
                 resolved_packages=dict(sorted(packages.items())),
                 seconds=round(time.monotonic() - started, 1))
    if substitutions:
        entry["note"] = ("resolved_packages holds the PyPI stand-ins of `substituted` builds and "
                         "their dependencies (e.g. nvidia-* wheels), not those of the pinned build")
    return entry


def run_checks(names: List[str]) -> Dict[str, Dict[str, Any]]:
    """check_truss for each name, concurrently (pip waits on the network most of the time)."""
    trusses = load_manifest()["trusses"]
    with tempfile.TemporaryDirectory(prefix="push-check-") as tmp:
        def one(name: str) -> Tuple[str, Dict[str, Any]]:
            work = Path(tmp) / name
            work.mkdir()
            log.info("%s: resolving", name)
            return name, check_truss(name, ROOT / trusses[name]["folder"], work)

        with concurrent.futures.ThreadPoolExecutor(max_workers=len(names)) as pool:
            return dict(pool.map(one, names))


def write_report(results: Dict[str, Dict[str, Any]], path: Path = REPORT_PATH) -> None:
    """Write the JSON report (atomically)."""
    pip_version = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                                 text=True, check=True).stdout.split()[1]
    report = {"checked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "resolver": f"pip {pip_version} --dry-run against {PYPI}",
              "python": PYTHON_VERSION, "platforms": PLATFORMS, "trusses": results}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trusses", nargs="*", help="default: every truss of the root config.yaml")
    parser.add_argument("--report", type=Path, default=REPORT_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    names = args.trusses or sorted(load_manifest()["trusses"])
    try:
        results = run_checks(names)
    except (subprocess.CalledProcessError, InvalidRequirement) as exc:
        log.error("could not prepare the check: %s", getattr(exc, "stderr", None) or exc)
        return 2
    write_report(results, args.report)
    for name, entry in results.items():
        if entry["ok"]:
            log.info("%s: ok %s", name, json.dumps(entry["image"]))
            for item in entry["substituted"]:
                log.info("%s: %s checked as %s (index %s not reachable here)", name,
                         item["requirement"], item["checked_as"], item["indexes"])
        else:
            log.error("%s: CONFLICT in step %s\n%s", name, entry["conflict"]["step"],
                      entry["conflict"]["pip"])
    log.info("report: %s", args.report)
    return 0 if all(entry["ok"] for entry in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
