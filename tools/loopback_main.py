"""Run the Truss server's own `main.py`, bound to 127.0.0.1 instead of 0.0.0.0.

The server hard-codes host="0.0.0.0" in uvicorn.Config; this wrapper rewrites only that argument
and then executes the unmodified main.py. Run from the laid-out server directory:

    python /path/to/tools/loopback_main.py
"""

import os
import runpy
import sys

import uvicorn

_original_init = uvicorn.Config.__init__


def _loopback_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
    kwargs["host"] = "127.0.0.1"
    _original_init(self, *args, **kwargs)


uvicorn.Config.__init__ = _loopback_init  # type: ignore[method-assign]
sys.argv = ["main.py"]
sys.path.insert(0, os.getcwd())
runpy.run_path("main.py", run_name="__main__")
