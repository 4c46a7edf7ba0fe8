"""DINOv2-family backbone: load with transformers, forward, pool tokens into embeddings."""

import dataclasses
import logging
import time
from typing import List, Optional, Sequence

import torch
from PIL import Image

from vfm_serving.batching import micro_batches
from vfm_serving.embeddings.geometry import TokenLayout
from vfm_serving.embeddings.preprocess import to_tensor
from vfm_serving.standin import standin_model_id

log = logging.getLogger(__name__)

TASKS = ("classification", "segmentation")


@dataclasses.dataclass
class Backbone:
    """A loaded ViT with its geometry and normalization.

    `model_id` names what was loaded; for a generated stand-in it says so.
    """

    model: torch.nn.Module
    layout: TokenLayout
    mean: Sequence[float]
    std: Sequence[float]
    device: torch.device
    model_id: str
    is_standin: bool


def load_backbone(source: str, *, input_size: int, mean: Sequence[float], std: Sequence[float],
                  model_id: str, revision: Optional[str] = None, token: Optional[str] = None,
                  device: Optional[str] = None) -> Backbone:
    """Load a DINOv2 checkpoint (hub id or local directory) with `AutoModel`, in eval mode.

    A directory holding `STANDIN.json` (written by the stand-in generator) is reported as a
    stand-in: its `model_id` says "stand-in" and is never the real model's name.

    Raises:
        OSError / ValueError from transformers when the checkpoint is missing or invalid.
    """
    from transformers import AutoModel

    started = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = AutoModel.from_pretrained(source, revision=revision, token=token)
    model.eval().to(dev)
    standin_id = standin_model_id(source)
    is_standin = standin_id is not None
    model_id = standin_id or model_id
    layout = TokenLayout.from_config(model.config, input_size)
    log.info("loaded %s on %s in %.1fs (hidden=%d, patch=%d, registers=%d)", model_id, dev,
             time.perf_counter() - started, layout.hidden_size, layout.patch_size,
             layout.num_register_tokens)
    return Backbone(model=model, layout=layout, mean=tuple(mean), std=tuple(std), device=dev,
                    model_id=model_id, is_standin=is_standin)


@torch.inference_mode()
def forward_tokens(backbone: Backbone, pixels: torch.Tensor) -> torch.Tensor:
    """pixels [B, 3, S, S] -> last_hidden_state [B, 1 + R + grid*grid, D] (float32, on CPU)."""
    out = backbone.model(pixel_values=pixels.to(backbone.device)).last_hidden_state
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
    """Apply the task's pooling; `task` must be one of TASKS."""
    if task == "classification":
        return classification_embedding(tokens, layout)
    if task == "segmentation":
        return segmentation_embedding(tokens, layout)
    raise ValueError(f"unknown task {task!r}")


def embed_images(backbone: Backbone, images: List[Image.Image], task: str,
                 batch_size: int) -> torch.Tensor:
    """Embed every image, in order, `batch_size` at a time.

    Returns:
        classification: [N, 2D]; segmentation: [N, D, grid, grid]. N == len(images), always.
    """
    outputs = []
    for chunk in micro_batches(images, batch_size):
        started = time.perf_counter()
        pixels = to_tensor(chunk, backbone.layout.input_size, backbone.mean, backbone.std)
        outputs.append(pool(forward_tokens(backbone, pixels), backbone.layout, task))
        log.info("micro-batch of %d images (%s) in %.3fs", len(chunk), task,
                 time.perf_counter() - started)
    result = torch.cat(outputs, dim=0)
    assert result.shape[0] == len(images)
    return result
