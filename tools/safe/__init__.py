"""SAFE detector dev tools (not shipped in the Truss): synthetic data, training, dataset runner.

`python -m tools.safe.<tool>` runs from the repository root; the shared package (shared/) is put
on sys.path here so the tools use the same detector code the Truss serves.
"""

import sys
from pathlib import Path

_SHARED = str(Path(__file__).resolve().parents[2] / "shared")
if _SHARED not in sys.path:
    sys.path.insert(0, _SHARED)
