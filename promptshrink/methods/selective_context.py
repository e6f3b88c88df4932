"""Selective Context (Li et al., EMNLP 2023): drop the units that carry the least self-information."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model_loading import DEFAULT_LM
from ..registry import register
from ..scoring.lm import surprisal, to_units
from ..segmentation import Unit
from .base import CompressionRequest, Compressor


@register
class SelectiveContext(Compressor):
    """Score each LM token by I(x_t) = -log2 P(x_t | x_<t), sum per unit, keep the most informative units.

    The paper keeps units above the p-th percentile of unit scores; here that threshold is taken over token
    mass so the budget holds in the target tokenizer. With a question, the score adds how much the question
    lowers each token's surprisal (question_weight * max(0, I(x) - I(x | q))), so answer-bearing units rise.
    """

    name = "selective_context"
    summary = "Self-information of a causal LM, aggregated to tokens/phrases/sentences; low-information units go."
    uses_question = True
    default_unit = "phrase"

    def __init__(
        self,
        unit: str | None = None,
        model: str = DEFAULT_LM,
        aggregate: str = "sum",
        question_weight: float = 1.0,
        overlap: int = 128,
    ) -> None:
        super().__init__(unit)
        if aggregate not in ("sum", "mean"):
            from ..errors import InvalidInputError

            raise InvalidInputError(f"aggregate must be 'sum' or 'mean', got {aggregate!r}")
        self.model = model
        self.aggregate = aggregate
        self.question_weight = question_weight
        self.overlap = overlap

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        info = surprisal(request.text, self.model, overlap=self.overlap, progress=request.report)
        scores = to_units(info, units, self.aggregate)
        if request.question and self.question_weight:
            given_q = surprisal(
                request.text,
                self.model,
                prefix=f"Question: {request.question}\n",
                overlap=self.overlap,
                progress=request.report,
            )
            gain = np.clip(info.values - given_q.values, 0.0, None)
            info.values = gain
            scores = scores + self.question_weight * to_units(info, units, self.aggregate)
        return scores
