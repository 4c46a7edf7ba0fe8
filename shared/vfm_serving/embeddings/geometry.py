"""Token layout of a ViT read from its config (timm-style: geometry is configuration)."""

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class TokenLayout:
    """Where each token sits in a ViT's output sequence for a given input size.

    Sequence = [CLS] + [register tokens] + [grid_h * grid_w patch tokens], row-major.
    """

    hidden_size: int
    patch_size: int
    input_size: int
    num_register_tokens: int

    @property
    def grid(self) -> int:
        """Patches per side (16 for 224 / 14)."""
        return self.input_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        """CLS plus register tokens."""
        return 1 + self.num_register_tokens

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid * self.grid

    @classmethod
    def from_config(cls, config: Any, input_size: int) -> "TokenLayout":
        """Read hidden size, patch size and register-token count from a transformers config.

        Raises:
            ValueError: `input_size` is not a multiple of the patch size.
        """
        patch = int(config.patch_size)
        if input_size % patch:
            raise ValueError(f"input size {input_size} is not a multiple of patch size {patch}")
        return cls(hidden_size=int(config.hidden_size), patch_size=patch, input_size=input_size,
                   num_register_tokens=int(getattr(config, "num_register_tokens", 0) or 0))
