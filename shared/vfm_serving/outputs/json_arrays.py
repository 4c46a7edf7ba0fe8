"""Tensors/arrays -> JSON-ready nested lists (float32 values, Python floats)."""

from typing import Any, List

import numpy as np
import torch


def to_json_list(values: Any) -> List[Any]:
    """torch tensor or numpy array of any rank -> nested Python lists of floats.

    float32 values are widened to float64 exactly, so a client reading the JSON recovers the
    model's float32 numbers bit for bit.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values).tolist()
