"""DINOv2-family backbone: load with transformers, forward in the served precision, pool tokens."""

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from vfm_serving.embeddings.geometry import TokenLayout
from vfm_serving.standin import standin_model_id

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Share of the memory left after loading that forward passes may use (activations of one batch).
ACTIVATION_MEMORY_SHARE = 0.5


@dataclasses.dataclass
class Backbone:
    """A loaded ViT with its geometry, normalization, device and forward dtype.

    `model_id` names what was loaded; for a generated stand-in it says so.
    """

    model: torch.nn.Module
    layout: TokenLayout
    mean: Sequence[float]
    std: Sequence[float]
    device: torch.device
    dtype: torch.dtype
    model_id: str
    is_standin: bool


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """`auto` -> float16 on CUDA, float32 elsewhere; else the named dtype.

    Raises:
        ValueError: an unknown precision name.
    """
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if precision not in DTYPES:
        raise ValueError(f"unknown precision {precision!r}")
    return DTYPES[precision]


def load_backbone(source: str, *, input_size: int, mean: Sequence[float], std: Sequence[float],
                  model_id: str, revision: Optional[str] = None, token: Optional[str] = None,
                  device: Optional[str] = None, precision: str = "float32") -> Backbone:
    """Load a DINOv2 checkpoint (hub id or local directory) with `AutoModel`, in eval mode, in
    the dtype `precision` resolves to, with PyTorch's SDPA attention.

    A directory holding `STANDIN.json` (written by the stand-in generator) is reported as a
    stand-in: its `model_id` says "stand-in" and is never the real model's name.

    Raises:
        OSError / ValueError from transformers when the checkpoint is missing or invalid.
    """
    from transformers import AutoModel

    started = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = resolve_dtype(precision, dev)
    model = AutoModel.from_pretrained(source, revision=revision, token=token, dtype=dtype,
                                      attn_implementation="sdpa")
    model.eval().to(dev)
    standin_id = standin_model_id(source)
    layout = TokenLayout.from_config(model.config, input_size)
    log.info("loaded %s on %s as %s in %.1fs (hidden=%d, patch=%d, registers=%d)",
             standin_id or model_id, dev, dtype, time.perf_counter() - started,
             layout.hidden_size, layout.patch_size, layout.num_register_tokens)
    return Backbone(model=model, layout=layout, mean=tuple(mean), std=tuple(std), device=dev,
                    dtype=dtype, model_id=standin_id or model_id,
                    is_standin=standin_id is not None)


def normalize_on_device(backbone: Backbone, pixels: np.ndarray) -> torch.Tensor:
    """uint8 [B, S, S, 3] -> normalized [B, 3, S, S] on the backbone's device and dtype.

    The arithmetic (x / 255 - mean) / std runs in float32, then casts: in float32 it is the
    model card's ToTensor + Normalize, bit for bit.
    """
    batch = torch.from_numpy(np.ascontiguousarray(pixels)).to(backbone.device)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(backbone.mean, dtype=torch.float32, device=backbone.device)
    std = torch.tensor(backbone.std, dtype=torch.float32, device=backbone.device)
    batch = batch.sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))
    return batch.to(backbone.dtype)


@torch.inference_mode()
def forward_tokens(backbone: Backbone, pixels: torch.Tensor) -> torch.Tensor:
    """pixels [B, 3, S, S] (normalized) -> last_hidden_state [B, 1 + R + grid*grid, D], float32
    on CPU.

    Raises:
        RuntimeError: the model returned another number of tokens than the layout says.
    """
    pixels = pixels.to(device=backbone.device, dtype=backbone.dtype)
    out = backbone.model(pixel_values=pixels).last_hidden_state
    expected = backbone.layout.num_tokens
    if out.shape[1] != expected:
        raise RuntimeError(f"model returned {out.shape[1]} tokens, layout expects {expected}")
    return out.float().cpu()


def classification_embedding(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """tokens [B, T, D] -> concat(CLS, mean of patch tokens) [B, 2D]. Register tokens excluded."""
    patches = tokens[:, layout.num_prefix_tokens:, :]
    return torch.cat([tokens[:, 0, :], patches.mean(dim=1)], dim=-1)


def segmentation_embedding(tokens: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """tokens [B, T, D] -> patch grid [B, D, grid, grid] (row-major patches)."""
    patches = tokens[:, layout.num_prefix_tokens:, :]
    batch = tokens.shape[0]
    return patches.reshape(batch, layout.grid, layout.grid, layout.hidden_size).permute(0, 3, 1, 2)


def pool(tokens: torch.Tensor, layout: TokenLayout, task: str) -> torch.Tensor:
    """Apply the task's pooling ("classification" or "segmentation").

    Raises:
        ValueError: an unknown task.
    """
    if task == "classification":
        return classification_embedding(tokens, layout)
    if task == "segmentation":
        return segmentation_embedding(tokens, layout)
    raise ValueError(f"unknown task {task!r}")


def activation_bytes_per_image(backbone: Backbone) -> int:
    """Peak working memory of one image in one transformer layer, with a 2x margin.

    Per token: residual, norm, q/k/v and attention output (6 x hidden), the MLP's hidden width
    (mlp_ratio x hidden, twice for SwiGLU), and one row of attention scores per head (SDPA may
    fall back to the plain kernel). Layers run one after another under inference mode.
    """
    config: Any = backbone.model.config
    hidden, tokens = backbone.layout.hidden_size, backbone.layout.num_tokens
    mlp = int(getattr(config, "mlp_ratio", 4) * hidden) * (2 if config.use_swiglu_ffn else 1)
    heads = int(config.num_attention_heads)
    elements = tokens * (6 * hidden + mlp + heads * tokens)
    return 2 * elements * torch.finfo(backbone.dtype).bits // 8


def device_batch_size(backbone: Backbone, maximum: int) -> int:
    """Most images (1 ..`maximum`) whose activations fit in ACTIVATION_MEMORY_SHARE of the
    device's free memory (CUDA: free GPU memory after loading; CPU: available RAM)."""
    if backbone.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(backbone.device)
    else:
        free = _available_ram()
    fits = int(ACTIVATION_MEMORY_SHARE * free) // activation_bytes_per_image(backbone)
    return max(1, min(fits, maximum))


def gpu_memory_gb(device: torch.device) -> Optional[float]:
    """Total memory of the serving GPU in GiB (1 decimal); None when serving on CPU."""
    if device.type != "cuda":
        return None
    return round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)


def _available_ram() -> int:
    """Bytes of RAM available to new allocations (Linux /proc/meminfo; else total pages)."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
