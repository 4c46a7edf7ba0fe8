"""Read the root config.yaml (project manifest) and prepare a truss's stand-in checkpoint."""

import importlib
import logging
from pathlib import Path
from typing import Any, Dict

import yaml

from tools.sample_photos import photo_png_base64 as sample_png_base64

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


def load_manifest() -> Dict[str, Any]:
    """The parsed root config.yaml."""
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def prepare_standin(name: str, force: bool = False) -> Dict[str, str]:
    """Generate `name`'s stand-in checkpoint if missing; return the env vars that point at it."""
    spec = load_manifest()["trusses"][name].get("standin")
    if not spec:
        return {}
    out = (ROOT / spec["out"]).resolve()
    if force or not out.exists():
        importlib.import_module(spec["module"]).make(out)
    else:
        log.info("reusing stand-in checkpoint %s", out)
    return {k: str(v).format(out=out, root=ROOT) for k, v in (spec.get("env") or {}).items()}


def resolve_example(value: Any) -> Any:
    """Replace "@sample:NAME" strings (recursively) with that sample's base64 PNG."""
    if isinstance(value, str) and value.startswith("@sample:"):
        return sample_png_base64(value.split(":", 1)[1])
    if isinstance(value, list):
        return [resolve_example(v) for v in value]
    if isinstance(value, dict):
        return {k: resolve_example(v) for k, v in value.items()}
    return value
