"""Stand-in backbone for the SAFE detector: a seeded, randomly initialised tiny `Dinov2Model`.

The Truss ships this stand-in (safe_detector/data/standin_backbone/, ~220 KB) next to the demo
heads trained on it, so tests and the demo are fully offline and the heads always match their
backbone. `make(out)` regenerates the same weights (same seed) into `out` and checks they are
bit-identical to the shipped ones; the server itself uses the shipped copy (no env needed).

    python -m tools.standins.safe_detector --out safe_detector/data/standin_backbone
"""

import argparse
import json
import logging
from pathlib import Path

import torch

STANDIN_MODEL_ID = "STAND-IN tiny Dinov2Model (random weights, seed 0; NOT facebook/dinov2)"
SHIPPED = Path(__file__).resolve().parents[2] / "safe_detector" / "data" / "standin_backbone"
log = logging.getLogger(__name__)


def make_backbone(out: Path, *, hidden_size: int = 32, layers: int = 2, heads: int = 2,
                  seed: int = 0) -> Path:
    """Save the seeded tiny DINOv2 (patch 14, image 224) with its STANDIN.json to `out`."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    model = Dinov2Model(Dinov2Config(hidden_size=hidden_size, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=hidden_size * 4,
                                     patch_size=14, image_size=224))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    (out / "STANDIN.json").write_text(json.dumps(
        {"model_id": STANDIN_MODEL_ID, "seed": seed, "hidden_size": hidden_size,
         "layers": layers}, indent=2) + "\n")
    log.warning("wrote %s to %s", STANDIN_MODEL_ID, out)
    return out


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make_backbone(args.out, seed=args.seed)


if __name__ == "__main__":
    main()
