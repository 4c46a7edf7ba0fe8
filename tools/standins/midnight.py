"""Write a stand-in for kaiko-ai/midnight: a randomly initialised transformers `Dinov2Model`.

Same class, same token layout (CLS + 16x16 patches at 224, patch 14) and same loading path as
Midnight; tiny dims. Writes STANDIN.json so the server reports it as a stand-in.

    python -m tools.standins.midnight --out .cache/standins/midnight [--registers 0]
"""

import argparse
import json
import logging
from pathlib import Path

import torch

STANDIN_MODEL_ID = "STAND-IN tiny Dinov2Model (random weights; NOT kaiko-ai/midnight)"
log = logging.getLogger(__name__)


def make(out: Path, *, hidden_size: int = 32, layers: int = 2, heads: int = 2,
         registers: int = 0, seed: int = 0) -> Path:
    """Save a tiny DINOv2 (with `registers` register tokens if > 0) to `out`; return `out`."""
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, \
        Dinov2WithRegistersModel

    torch.manual_seed(seed)
    common = dict(hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=hidden_size * 4, patch_size=14, image_size=224)
    if registers:
        model = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(num_register_tokens=registers, **common))
    else:
        model = Dinov2Model(Dinov2Config(**common))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    model_id = STANDIN_MODEL_ID if not registers else \
        STANDIN_MODEL_ID.replace("Dinov2Model", f"Dinov2WithRegistersModel ({registers} registers)")
    (out / "STANDIN.json").write_text(json.dumps(
        {"model_id": model_id, "seed": seed, "hidden_size": hidden_size, "layers": layers,
         "registers": registers}, indent=2))
    log.warning("wrote %s to %s", model_id, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--registers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make(args.out, registers=args.registers, seed=args.seed)


if __name__ == "__main__":
    main()
