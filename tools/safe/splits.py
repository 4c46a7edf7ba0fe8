"""Split by source photo: every image derived from one photo lands in the same split."""

import random
from typing import Dict, Iterable


def assign_splits(sources: Iterable[str], *, seed: int = 0, val_fraction: float = 0.2,
                  test_fraction: float = 0.2) -> Dict[str, str]:
    """Map each distinct source to "train" | "val" | "test" (seeded shuffle of sorted sources).

    At least one source goes to val and to test when the fraction is > 0 and there are >= 3
    sources. Raises ValueError when fractions are negative or leave nothing for training.
    """
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError("need val_fraction, test_fraction >= 0 and their sum < 1")
    unique = sorted(set(sources))
    random.Random(seed).shuffle(unique)
    n = len(unique)

    def count(fraction: float) -> int:
        return 0 if fraction == 0 or n < 3 else max(1, round(fraction * n))

    n_test, n_val = count(test_fraction), count(val_fraction)
    splits = {s: "test" for s in unique[:n_test]}
    splits.update({s: "val" for s in unique[n_test:n_test + n_val]})
    splits.update({s: "train" for s in unique[n_test + n_val:]})
    return splits
