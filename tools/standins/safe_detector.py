"""Stand-in backbone for the SAFE detector: a seeded, randomly initialised tiny `Dinov2Model`.

The Truss ships this stand-in (safe_detector/data/standin_backbone/, ~220 KB) next to the demo
heads trained on it, so tests and the demo are fully offline and the heads always match their
backbone. `make(out)` regenerates the same weights (same seed) into `out` and checks they are
bit-identical to the shipped ones; the server itself uses the shipped copy (no env needed).

    python -m tools.standins.safe_detector --out safe_detector/data/standin_backbone
"""

import logging
from pathlib import Path

import torch

from tools.standins import make_tiny_dinov2, run_cli

STANDIN_MODEL_ID = "STAND-IN tiny Dinov2Model (random weights, seed 0; NOT facebook/dinov2)"
SHIPPED = Path(__file__).resolve().parents[2] / "safe_detector" / "data" / "standin_backbone"
log = logging.getLogger(__name__)


def make_backbone(out: Path, *, hidden_size: int = 32, layers: int = 2, heads: int = 2,
                  seed: int = 0) -> Path:
    """Save the seeded tiny DINOv2 (patch 14, image 224) with its STANDIN.json to `out`."""
    return make_tiny_dinov2(out, STANDIN_MODEL_ID, hidden_size=hidden_size, layers=layers,
                            heads=heads, seed=seed)


def make(out: Path) -> Path:
    """Manifest hook: regenerate the stand-in into `out` and compare with the shipped copy."""
    from safetensors.torch import load_file

    make_backbone(out)
    shipped = SHIPPED / "model.safetensors"
    if shipped.is_file():
        a, b = load_file(str(out / "model.safetensors")), load_file(str(shipped))
        same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        (log.info if same else log.warning)(
            "regenerated stand-in %s the shipped one in %s", "matches" if same else
            "DIFFERS FROM", SHIPPED)
    return out


if __name__ == "__main__":
    run_cli(__doc__, make_backbone, seed=0)
