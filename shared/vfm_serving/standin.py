"""Stand-in checkpoints: how a served model learns it is not the real one.

The project's stand-in generators (tools/standins/) write `STANDIN.json` with a `model_id` that
says STAND-IN; loaders report that id instead of the real model's name.
"""

import json
from pathlib import Path
from typing import Optional

STANDIN_MARKER = "STANDIN.json"


def standin_model_id(directory: str) -> Optional[str]:
    """The stand-in label of a checkpoint directory, or None for a real checkpoint / hub id."""
    marker = Path(directory) / STANDIN_MARKER
    if not marker.is_file():
        return None
    return str(json.loads(marker.read_text())["model_id"])
