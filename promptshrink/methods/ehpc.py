"""EHPC (Evaluator-Head Prompt Compression, 2025): score tokens by a few calibrated heads, with early exit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..model_loading import DEFAULT_LM
from ..params import integer, non_empty, one_of
from ..registry import register
from ..scoring import evaluator_heads
from ..scoring.attention import pool, text_attention
from ..scoring.lm import to_units
from ..segmentation import Unit
from .base import CompressionRequest, ExtractiveCompressor


@register
@dataclass
class EHPCCompressor(ExtractiveCompressor):
    """Run ``model`` only up to its deepest evaluator head (found offline by `promptshrink calibrate-ehpc`), take
    those heads' attention from the question (or the last ``window`` tokens) to every context token, pool it
    over ``kernel`` neighbouring tokens (``pooling``: max or avg), average per unit and keep the top units.
    Long input is read in LM windows, each followed by the question.
    Reference: EHPC (Evaluator-Head Prompt Compression), 2025.

    Args:
        model: Causal LM whose evaluator heads were calibrated (``promptshrink calibrate-ehpc --model ...``).
        window: Trailing tokens whose attention stands in for the question when there is none.
        kernel: Neighbouring tokens the head attention is pooled over (>= 1).
        pooling: How the attention is pooled over the kernel: ``max`` or ``avg``.
        max_window: Longest LM window in tokens (>= 64); longer input is read in windows.
        max_layer: Deepest layer the heads may come from (None: the calibrated heads); the LM runs only that deep,
            so a lower value is faster (``benchmarks.ehpc_depth`` measures what it costs in retention).
    """

    name = "ehpc"
    summary = "Evaluator heads: attention of calibrated early-layer heads from the question, early-exit prefill."
    uses_question = True
    default_unit = "word"

    model: str = DEFAULT_LM
    window: int = 32
    kernel: int = 5
    pooling: str = "max"
    max_window: int = 1024
    max_layer: int | None = None
    heads: dict[int, list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        non_empty("model", self.model)
        integer("window", self.window)
        integer("kernel", self.kernel)
        one_of("pooling", self.pooling, ("max", "avg"))
        integer("max_window", self.max_window, 64)
        if self.max_layer is not None:
            integer("max_layer", self.max_layer, 0)
        self.heads = evaluator_heads.load(self.model, self.max_layer)

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
