"""Per-item outcomes in input order."""

import dataclasses
from typing import Any, List, Optional

import numpy as np

from vfm_client.errors import ItemError, PartialFailureError


@dataclasses.dataclass
class Outcome:
    """One item's result: `value` (an embedding array, a Detection, ...) or `error`."""

    value: Any = None
    error: Optional[ItemError] = None
    model_id: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclasses.dataclass
class Results:
    """Embeddings of a job, in input order. `embeddings[i]` is None exactly when `errors[i]` is
    set; one failed item never removes the others."""

    sources: List[str]
    embeddings: List[Optional[np.ndarray]]
    errors: List[Optional[ItemError]]
    model_ids: List[Optional[str]]

    @classmethod
    def from_outcomes(cls, sources: List[str], outcomes: List[Outcome]) -> "Results":
        return cls(sources, [o.value for o in outcomes], [o.error for o in outcomes],
                   [o.model_id for o in outcomes])

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask [N]: True where the item has an embedding."""
        return np.array([e is None for e in self.errors], dtype=bool)

    @property
    def failed(self) -> int:
        return int((~self.ok).sum())

    def array(self, fill: float = np.nan) -> np.ndarray:
        """Stack to [N, *embedding_shape] float32; failed rows are `fill`.

        Raises:
            ValueError: no item succeeded (the shape is unknown) or shapes differ.
        """
        done = [e for e in self.embeddings if e is not None]
        if not done:
            raise ValueError("no item succeeded: nothing to stack")
        out = np.full((len(self), *done[0].shape), fill, dtype=np.float32)
        for i, emb in enumerate(self.embeddings):
            if emb is not None:
                out[i] = emb
        return out

    def raise_for_errors(self) -> "Results":
        """Raise PartialFailureError if any item failed; else return self."""
        if self.failed:
            raise PartialFailureError(self, self.failed, len(self))
        return self
