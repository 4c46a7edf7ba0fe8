"""The DINOv2 embedding runner: decode one image to a model-input tile, embed many at once.

    prepare: encoded bytes -> decode (reduced-scale for large JPEGs) -> Resize(S) + CenterCrop(S)
             -> Tile(uint8 [S, S, 3], task)                          (decode thread, per image)
    forward: Tiles -> normalize on device -> backbone -> pool per tile's task -> float32 arrays
             ([2D] classification, [D, g, g] segmentation)           (batcher thread, per pass)
"""

import dataclasses
import logging
from typing import Any, List

import numpy as np

from vfm_serving.embeddings.dinov2 import (
    Backbone,
    device_batch_size,
    forward_tokens,
    normalize_on_device,
    pool,
)
from vfm_serving.embeddings.preprocess import resize_and_crop
from vfm_serving.inputs.images import decode_rgb
from vfm_serving.settings import ServingSettings

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Tile:
    """One image reduced to the model input: uint8 [S, S, 3] RGB, and the pooling it needs."""

    pixels: np.ndarray
    task: str


class DinoV2Embedder:
    """Runner (see vfm_serving.serving.Runner) for a DINOv2-family embedding model."""

    def __init__(self, backbone: Backbone, settings: ServingSettings) -> None:
        self.backbone = backbone
        self.settings = settings
        self.optimal_batch_size = device_batch_size(backbone, settings.max_batch_size)
        log.info("%s: optimal batch size %d on %s", backbone.model_id, self.optimal_batch_size,
                 backbone.device)

    def prepare(self, data: bytes, request: Any) -> Tile:
        """Encoded image -> Tile of the model's input size, for `request.options.task`.

        Raises:
            ImageDecodeError, ImageTooLarge, InvalidImageGeometry (see decode_rgb).
        """
        size = self.backbone.layout.input_size
        image = decode_rgb(data, self.settings, reduce_for=size)
        pixels = np.asarray(resize_and_crop(image, size), dtype=np.uint8)
        return Tile(pixels, request.options.task)

    def forward(self, tiles: List[Tile]) -> List[np.ndarray]:
        """One forward pass over `tiles` -> one float32 embedding per tile, in order.

        Raises:
            RuntimeError: the model's token count differs from the layout (a checkpoint bug).
        """
        batch = normalize_on_device(self.backbone, np.stack([t.pixels for t in tiles]))
        tokens = forward_tokens(self.backbone, batch)
        layout = self.backbone.layout
        return [pool(tokens[i:i + 1], layout, tile.task)[0].numpy()
                for i, tile in enumerate(tiles)]

    def golden_item(self) -> Tile:
        """A fixed gradient tile (deterministic, no files needed), classification."""
        size = self.backbone.layout.input_size
        y, x = np.mgrid[0:size, 0:size]
        pixels = np.stack([x * 255 // size, y * 255 // size, (x + y) % 256], axis=-1)
        return Tile(pixels.astype(np.uint8), "classification")

    def health_vector(self, output: np.ndarray) -> np.ndarray:
        """The embedding itself."""
        return output

    def warm_up(self) -> None:
        """One forward pass at the optimal batch size (allocator, kernels, lazy init)."""
        size = self.backbone.layout.input_size
        tiles = [Tile(np.zeros((size, size, 3), np.uint8), "classification")]
        self.forward(tiles * self.optimal_batch_size)
