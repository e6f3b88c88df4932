"""DSPC (Dual-Stage Progressive Compression, 2025): TF-IDF sentence filter, then multi-signal token pruning."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import InvalidInputError
from ..model_loading import DEFAULT_LM, LARGE_LM
from ..registry import register
from ..scoring.attention import all_heads, text_attention
from ..scoring.coarse import keep_top_groups, owners
from ..scoring.cross_model import loss_difference
from ..scoring.lm import to_units
from ..scoring.normalise import normalise
from ..scoring.position import positional_importance
from ..scoring.tfidf import tfidf_relevance
from ..segmentation import Unit, protected_spans, segment
from .base import CompressionRequest, Compressor


@register
class DSPC(Compressor):
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
    """

    name = "dspc"
    summary = "Dual-stage: TF-IDF sentence filter, then attention + cross-model loss + position token pruning."
    uses_question = True
    default_unit = "word"

    def __init__(
        self,
        unit: str | None = None,
        model: str = DEFAULT_LM,
        large_model: str | None = LARGE_LM,
        coarse_share: float = 1.0,
        attention_weight: float = 0.4,
        loss_weight: float = 0.4,
        position_weight: float = 0.2,
        normalisation: str = "rank",
        position_edge: float = 0.1,
        tail_tokens: int = 32,
    ) -> None:
        super().__init__(unit)
        weights = (attention_weight, loss_weight, position_weight)
        if not all(isinstance(w, (int, float)) and math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
            raise InvalidInputError(f"weights must be finite, >= 0 and not all 0, got {weights}")
        if not isinstance(coarse_share, (int, float)) or not coarse_share >= 1:
            raise InvalidInputError(f"coarse_share must be >= 1 (a multiple of the budget), got {coarse_share!r}")
        if normalisation not in ("rank", "zscore"):
            raise InvalidInputError(f"normalisation must be 'rank' or 'zscore', got {normalisation!r}")
        if not isinstance(position_edge, (int, float)) or not position_edge > 0:
            raise InvalidInputError(f"position_edge must be > 0, got {position_edge!r}")
        if isinstance(tail_tokens, bool) or not isinstance(tail_tokens, int) or tail_tokens < 1:
            raise InvalidInputError(f"tail_tokens must be a positive integer, got {tail_tokens!r}")
        self.model = model
        self.large_model = large_model
        self.coarse_share = float(coarse_share)
        self.weights = weights
        self.normalisation = normalisation
        self.position_edge = float(position_edge)
        self.tail_tokens = tail_tokens

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
        attention_weight, loss_weight, position_weight = self.weights
        if attention_weight:
            tokens, _ = text_attention(text, self.model, all_heads, question, self.tail_tokens, progress=request.report)
            signals.append((attention_weight, to_units(tokens, units, "mean")))
        if loss_weight and self.large_model:
            loss = loss_difference(text, units, self.model, self.large_model, progress=request.report)
            signals.append((loss_weight, loss))
        if position_weight:
            signals.append((position_weight, positional_importance(units, text, question, self.position_edge)))
        scores = np.full(len(units), -np.inf)
        scores[active] = sum(w * normalise(s[active], self.normalisation) for w, s in signals)
        return scores
