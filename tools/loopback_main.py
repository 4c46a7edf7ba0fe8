"""Run the Truss server's own `main.py`, bound to 127.0.0.1 instead of 0.0.0.0.

The server hard-codes host="0.0.0.0" in uvicorn.Config; this wrapper rewrites only that argument
and then executes the unmodified main.py. Run from the laid-out server directory:

    python /path/to/tools/loopback_main.py

Import blocking: with `VFM_BLOCKED_MODULES=torch,transformers` (comma-separated top-level module
names) those modules and their submodules are hidden before anything else is imported, exactly as
if they were not installed: `import torch` raises ModuleNotFoundError,
`importlib.util.find_spec("torch")` returns None, and `importlib.metadata` no longer finds a
distribution that installs a blocked module (transformers, TensorFlow and torch probe optional
packages these ways). A server that loads and predicts under the block imports nothing
from them, so a Truss image without those packages can serve it (tests/test_push_readiness.py).
"""

import importlib.abc
import logging
import os
import runpy
import sys
from importlib.machinery import ModuleSpec
from importlib.metadata import Distribution
from types import ModuleType
from typing import Any, Dict, FrozenSet, Iterable, Iterator, Optional, Sequence, Set, Tuple

BLOCKED_MODULES_ENV = "VFM_BLOCKED_MODULES"
BLOCK_ANNOUNCEMENT = "loopback_main: blocking imports of"
log = logging.getLogger("loopback_main")
_DIST_BLOCKED: Dict[str, bool] = {}  # distribution metadata path -> hidden


def blocked_modules_from_env(value: Optional[str]) -> FrozenSet[str]:
    """Top-level module names from a comma-separated env value ("" or None -> empty).

    Raises:
        ValueError: an entry is a dotted name (only whole top-level packages can be blocked).
    """
    names = frozenset(part.strip() for part in (value or "").split(",") if part.strip())
    dotted = sorted(name for name in names if "." in name)
    if dotted:
        raise ValueError(f"{BLOCKED_MODULES_ENV}: top-level module names only, got {dotted}")
    return names


def top_level_modules(dist: Distribution) -> Set[str]:
    """Importable top-level names a distribution installs (top_level.txt, else its file list)."""
    listed = dist.read_text("top_level.txt")
    names: Set[str] = set(listed.split()) if listed else set()
    if not listed:
        for file in dist.files or []:
            parts = file.parts
            if len(parts) > 1 and not parts[0].endswith((".dist-info", ".data")):
                names.add(parts[0])
            elif len(parts) == 1 and file.suffix in (".py", ".so"):
                names.add(parts[0].split(".")[0])
    return {name for name in names if name.isidentifier()}


class _HidingFinder(importlib.abc.MetaPathFinder):
    """Wraps one `sys.meta_path` finder; finds nothing for a blocked module or its submodules,
    and no distribution that installs a blocked top-level module."""

    def __init__(self, finder: Any, blocked: FrozenSet[str], reported: Set[str]) -> None:
        self._finder = finder
        self._blocked = blocked
        self._reported = reported  # shared by all wrappers: one log line per blocked module

    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None,
                  target: Optional[ModuleType] = None) -> Optional[ModuleSpec]:
        top = fullname.partition(".")[0]
        if top in self._blocked:
            if top not in self._reported:
                self._reported.add(top)
                log.warning("loopback_main: hid %r from an import or find_spec (blocked)", fullname)
            return None
        find_spec = getattr(self._finder, "find_spec", None)
        return find_spec(fullname, path, target) if find_spec is not None else None

    def find_distributions(self, *args: Any, **kwargs: Any) -> Iterator[Distribution]:
        find = getattr(self._finder, "find_distributions", None)
        found: Iterable[Distribution] = find(*args, **kwargs) if find is not None else ()
        for dist in found:
            key = str(getattr(dist, "_path", id(dist)))
            if key not in _DIST_BLOCKED:
                modules = top_level_modules(dist)
                _DIST_BLOCKED[key] = not modules.isdisjoint(self._blocked)
            if not _DIST_BLOCKED[key]:
                yield dist

    def invalidate_caches(self) -> None:
        invalidate = getattr(self._finder, "invalidate_caches", None)
        if invalidate is not None:
            invalidate()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._finder, name)


def install_import_blocker(blocked: FrozenSet[str]) -> None:
    """Hide `blocked` top-level modules from every finder on `sys.meta_path` (see module doc).

    Every finder is wrapped (not just one put in front), so the lookup as a whole finds nothing:
    the import system then raises its own ModuleNotFoundError, as in an image that lacks them.
    Finders added to `sys.meta_path` later are wrapped too, at the next import (an audit hook).

    Raises:
        RuntimeError: a blocked module is already imported (the block would prove nothing).
    """
    if not blocked:
        return
    loaded = sorted(name for name in sys.modules if name.partition(".")[0] in blocked)
    if loaded:
        raise RuntimeError(f"{BLOCKED_MODULES_ENV}: already imported before the block: {loaded}")
    reported: Set[str] = set()

    def wrap_new_finders() -> None:
        sys.meta_path[:] = [finder if isinstance(finder, _HidingFinder)
                            else _HidingFinder(finder, blocked, reported)
                            for finder in sys.meta_path]

    def on_audit(event: str, _args: Tuple[Any, ...]) -> None:
        if event == "import":  # raised before each import's finder lookup
            wrap_new_finders()

    wrap_new_finders()
    sys.addaudithook(on_audit)
    importlib.invalidate_caches()
    log.warning("%s %s", BLOCK_ANNOUNCEMENT, ", ".join(sorted(blocked)))


def _bind_uvicorn_to_loopback() -> None:
    """Patch uvicorn.Config so the server's hard-coded host="0.0.0.0" becomes 127.0.0.1."""
    import uvicorn

    original_init = uvicorn.Config.__init__

    def loopback_init(self: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        kwargs["host"] = "127.0.0.1"
        original_init(self, *args, **kwargs)

    uvicorn.Config.__init__ = loopback_init  # type: ignore[method-assign]


def main() -> None:
    """Block the env's modules, bind uvicorn to loopback, run ./main.py as __main__."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
    install_import_blocker(blocked_modules_from_env(os.environ.get(BLOCKED_MODULES_ENV)))
    _bind_uvicorn_to_loopback()
    sys.argv = ["main.py"]
    sys.path.insert(0, os.getcwd())
    runpy.run_path("main.py", run_name="__main__")


if __name__ == "__main__":
    main()
