"""DSPC (Dual-Stage Progressive Compression, 2025): TF-IDF sentence filter, then multi-signal token pruning."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInputError
from ..model_loading import DEFAULT_LM, LARGE_LM
from ..params import integer, non_empty, number, one_of
from ..registry import register
from ..scoring.attention import all_heads, text_attention
from ..scoring.coarse import keep_top_groups, owners
from ..scoring.cross_model import loss_difference
from ..scoring.lm import to_units
from ..scoring.normalise import normalise
from ..scoring.position import positional_importance
from ..scoring.tfidf import tfidf_relevance
from ..segmentation import Unit, protected_spans, segment
from .base import CompressionRequest, ExtractiveCompressor


@register
@dataclass
class DSPCCompressor(ExtractiveCompressor):
    """Coarse stage: keep the sentences most TF-IDF-similar to the question (or to the whole document) until they
    hold ``coarse_share`` x the budget (default 1: the coarse stage drops sentences down to the budget, so the
    fine stage only trims the sentences that cross it; with a wider share, word-level pruning of every kept
    sentence cut the answer span in most DisflQA items). Fine stage: score each unit of the kept sentences by
    ``attention_weight`` * attention it receives from the question (or the text's tail) in ``model``, averaged
    over all heads and layers, + ``loss_weight`` * (loss under ``model`` - loss under ``large_model``)
    + ``position_weight`` * positional prior (start, end, near the question), each signal normalised first
    (``normalisation``: rank or zscore); the budget keeps the best units. Default pair: SmolLM2-135M-Instruct
    (default-lm) vs Qwen2.5-Coder-0.5B-Instruct (large-lm); ``large_model=None`` drops the loss term.
    The paper's weight values were not available to us: the defaults are ours.
    Reference: DSPC (Dual-Stage Progressive Compression), 2025.

    Args:
        model: Small causal LM for the attention signal and the first loss.
        large_model: Larger LM of the same tokenizer family for the loss difference; None drops the loss term.
        coarse_share: Sentences kept by the coarse stage, as a multiple (>= 1) of the budget.
        attention_weight: Weight (>= 0) of the attention each unit receives from the question or the tail.
        loss_weight: Weight (>= 0) of the loss difference between ``model`` and ``large_model``.
        position_weight: Weight (>= 0) of the positional prior; the three weights must not all be 0.
        normalisation: How each signal is normalised before weighting: ``rank`` or ``zscore``.
        position_edge: Width (> 0, as a share of the text) of the start/end/question regions the prior favours.
        tail_tokens: Trailing tokens whose attention stands in for the question when there is none.
    """

    name = "dspc"
    summary = "Dual-stage: TF-IDF sentence filter, then attention + cross-model loss + position token pruning."
    uses_question = True
    default_unit = "word"

    model: str = DEFAULT_LM
    large_model: str | None = LARGE_LM
    coarse_share: float = 1.0
    attention_weight: float = 0.4
    loss_weight: float = 0.4
    position_weight: float = 0.2
    normalisation: str = "rank"
    position_edge: float = 0.1
    tail_tokens: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        non_empty("model", self.model)
        if self.large_model is not None:
            non_empty("large_model", self.large_model)
        self.coarse_share = number("coarse_share", self.coarse_share, 1.0)
        weights = ("attention_weight", "loss_weight", "position_weight")
        if not any([number(label, getattr(self, label), 0.0) for label in weights]):
            raise InvalidInputError(f"{', '.join(weights)} must not all be 0")
        one_of("normalisation", self.normalisation, ("rank", "zscore"))
        self.position_edge = number("position_edge", self.position_edge, 0.0, exclusive_low=True)
        integer("tail_tokens", self.tail_tokens)

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        text, question = request.text, request.question
        limit = request.budget.limit(request.tokenizer.count(text))
        spans = protected_spans(text, request.keep, protect_numbers=request.protect_numbers)
        sentences = segment(text, "sentence", spans)
        relevance = tfidf_relevance([s.text for s in sentences], question)
        kept = keep_top_groups(sentences, relevance, math.ceil(self.coarse_share * limit), request.tokenizer)
        active = kept[owners(units, sentences)]
        if not active.any():
            return np.zeros(len(units))
        signals = []
        if self.attention_weight:
            tokens, _ = text_attention(text, self.model, all_heads, question, self.tail_tokens, progress=request.report)
            signals.append((self.attention_weight, to_units(tokens, units, "mean")))
        if self.loss_weight and self.large_model:
            loss = loss_difference(text, units, self.model, self.large_model, progress=request.report)
            signals.append((self.loss_weight, loss))
        if self.position_weight:
            signals.append((self.position_weight, positional_importance(units, text, question, self.position_edge)))
        scores = np.full(len(units), -np.inf)
        scores[active] = sum(w * normalise(s[active], self.normalisation) for w, s in signals)
        return scores
