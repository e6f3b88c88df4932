"""EHPC (Evaluator-Head Prompt Compression, 2025): score tokens by a few calibrated heads, with early exit."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError
from ..model_loading import DEFAULT_LM
from ..registry import register
from ..scoring import evaluator_heads
from ..scoring.attention import pool, text_attention
from ..scoring.lm import to_units
from ..segmentation import Unit
from .base import CompressionRequest, Compressor


@register
class EHPC(Compressor):
    """Run ``model`` only up to its deepest evaluator head (found offline by `promptshrink calibrate-ehpc`), take
    those heads' attention from the question (or the last ``window`` tokens) to every context token, pool it
    over ``kernel`` neighbouring tokens (``pooling``: max or avg), average per unit and keep the top units.
    Long input is read in LM windows, each followed by the question.
    """

    name = "ehpc"
    summary = "Evaluator heads: attention of calibrated early-layer heads from the question, early-exit prefill."
    uses_question = True
    default_unit = "word"

    def __init__(
        self,
        unit: str | None = None,
        model: str = DEFAULT_LM,
        window: int = 32,
        kernel: int = 5,
        pooling: str = "max",
        max_window: int = 1024,
    ) -> None:
        super().__init__(unit)
        for label, value, low in (("window", window, 1), ("kernel", kernel, 1), ("max_window", max_window, 64)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{label} must be an integer >= {low}, got {value!r}")
        if pooling not in ("max", "avg"):
            raise InvalidInputError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        self.model = model
        self.heads = evaluator_heads.load(model)
        self.window = window
        self.kernel = kernel
        self.pooling = pooling
        self.max_window = max_window

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        tokens, _ = text_attention(
            request.text,
            self.model,
            self.heads,
            request.question,
            self.window,
            self.max_window,
            request.report,
        )
        tokens.values = pool(tokens.values, self.kernel, self.pooling)
        return to_units(tokens, units, "mean")
