"""Write a stand-in for kaiko-ai/midnight: a randomly initialised transformers `Dinov2Model`.

Same class, same token layout (CLS + 16x16 patches at 224, patch 14) and same loading path as
Midnight; tiny dims. Writes STANDIN.json so the server reports it as a stand-in.

    python -m tools.standins.midnight --out .cache/standins/midnight [--registers 0]
"""

from pathlib import Path

from tools.standins import make_tiny_dinov2, run_cli

STANDIN_MODEL_ID = "STAND-IN tiny Dinov2Model (random weights; NOT kaiko-ai/midnight)"


def make(out: Path, *, hidden_size: int = 32, layers: int = 2, heads: int = 2,
         registers: int = 0, seed: int = 0) -> Path:
    """Save a tiny DINOv2 (with `registers` register tokens if > 0) to `out`; return `out`."""
    model_id = STANDIN_MODEL_ID if not registers else STANDIN_MODEL_ID.replace(
        "Dinov2Model", f"Dinov2WithRegistersModel ({registers} registers)")
    return make_tiny_dinov2(out, model_id, hidden_size=hidden_size, layers=layers, heads=heads,
                            registers=registers, seed=seed)


if __name__ == "__main__":
    run_cli(__doc__, make, registers=0, seed=0)
