"""Cross-model loss difference: per-unit token loss under a small LM minus that under a larger one.

The two models may use different tokenizers; each model's token losses are aligned onto the same units by
character offsets (`to_units`), so the difference is taken per unit, never per model token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from ..segmentation import Unit
from .lm import surprisal, to_units


def loss_difference(
    text: str,
    units: Sequence[Unit],
    small: str,
    large: str,
    reduce: str = "mean",
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Per unit: mean loss (bits) under ``small`` minus under ``large``.

    High where the larger model predicts the unit much better than the small one, i.e. where reading it needs
    knowledge or long-range context the small model lacks.
    """
    small_bits = to_units(surprisal(text, small, progress=progress), units, reduce)
    return small_bits - to_units(surprisal(text, large, progress=progress), units, reduce)
