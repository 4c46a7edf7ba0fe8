"""Generators of small stand-in checkpoints built with the real architecture classes.

Stand-ins have random weights: their numbers mean nothing. They exist so the real loading and
serving code can run here, where the real weights cannot be downloaded. Each writes STANDIN.json
(with a `model_id` that says STAND-IN) so the servers label their output.
"""

import argparse
import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict

log = logging.getLogger(__name__)


def write_marker(out: Path, model_id: str, **details: Any) -> None:
    """Write `out`/STANDIN.json: the label the servers report instead of the real model's name."""
    marker = json.dumps({"model_id": model_id, **details}, indent=2)
    (out / "STANDIN.json").write_text(marker + "\n")
    log.warning("wrote %s to %s", model_id, out)


def make_tiny_dinov2(out: Path, model_id: str, *, hidden_size: int = 32, layers: int = 2,
                     heads: int = 2, registers: int = 0, seed: int = 0) -> Path:
    """Save a seeded, randomly initialised transformers `Dinov2Model` (or
    `Dinov2WithRegistersModel` when `registers` > 0), patch 14, image 224, to `out`."""
    import torch
    from transformers import (
        Dinov2Config,
        Dinov2Model,
        Dinov2WithRegistersConfig,
        Dinov2WithRegistersModel,
    )

    torch.manual_seed(seed)
    common: Dict[str, Any] = dict(hidden_size=hidden_size, num_hidden_layers=layers,
                                  num_attention_heads=heads, intermediate_size=hidden_size * 4,
                                  patch_size=14, image_size=224)
    if registers:
        model = Dinov2WithRegistersModel(
            Dinov2WithRegistersConfig(num_register_tokens=registers, **common))
    else:
        model = Dinov2Model(Dinov2Config(**common))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    write_marker(out, model_id, seed=seed, hidden_size=hidden_size, layers=layers,
                 registers=registers)
    return out


def run_cli(doc: str, make: Callable[..., Path], **int_options: int) -> None:
    """`--out DIR` plus one `--name N` int option per keyword (its default), then make(out, ...)."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    for name, default in int_options.items():
        parser.add_argument(f"--{name}", type=int, default=default)
    args = vars(parser.parse_args())
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    make(args.pop("out"), **args)
