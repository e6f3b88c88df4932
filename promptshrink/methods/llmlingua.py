"""Our implementation of the LLMLingua ideas (Jiang et al., EMNLP 2023); not the `llmlingua` package."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..model_loading import DEFAULT_LM, load_causal_lm
from ..params import integer, non_empty, number
from ..registry import register
from ..scoring.coarse import keep_by_cost, keep_top_groups, owners
from ..scoring.kv_context import PrunedContext
from ..scoring.lm import start_ids, surprisal, to_units
from ..scoring.normalise import normalise
from ..segmentation import Unit, protected_spans, segment
from .base import CompressionRequest, ExtractiveCompressor


@register
@dataclass
class LLMLinguaCompressor(ExtractiveCompressor):
    """Budget controller + iterative token-level compression with a small causal LM.

    Coarse: sentences ranked by perplexity (mean self-information) are kept, highest first, until they hold
    ``coarse_share`` x the budget (the ratio slack). Fine: the kept units are read in segments of about
    ``segment_tokens`` LM tokens; each segment is scored conditioned on the *compressed* text so far (its last
    ``context_tokens`` tokens) and keeps its highest-perplexity units at the ratio that spends the remaining
    budget evenly over the remaining text. As in the paper's code, the kept tokens' keys/values are reused from a KV
    cache rather than the compressed text being re-read for every segment (``scoring.kv_context``): each token goes
    through the LM once, and the kept ones condition the later segments as they were read. Not question-aware (see
    ``longllmlingua``).
    Reference: Jiang et al., "LLMLingua: Compressing Prompts for Accelerated Inference of Large Language Models",
    EMNLP 2023.

    Args:
        model: Small causal LM that measures perplexity.
        coarse_share: Sentences kept by the coarse stage, as a multiple (>= 1) of the budget (the ratio slack).
        segment_tokens: LM tokens per segment of the iterative fine stage.
        context_tokens: Tokens of the compressed text so far that condition each segment.
    """

    name = "llmlingua"
    summary = "Our LLMLingua: perplexity sentence filter with a ratio slack, then iterative token-level pruning."
    default_unit = "word"

    model: str = DEFAULT_LM
    coarse_share: float = 1.5
    segment_tokens: int = 200
    context_tokens: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        non_empty("model", self.model)
        self.coarse_share = number("coarse_share", self.coarse_share, 1.0)
        integer("segment_tokens", self.segment_tokens)
        integer("context_tokens", self.context_tokens)

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        text = request.text
        limit = request.budget.limit(request.tokenizer.count(text))
        sentences = segment(
            text, "sentence", protected_spans(text, request.keep, protect_numbers=request.protect_numbers)
        )
        perplexity = to_units(surprisal(text, self.model, progress=request.report), sentences, "mean")
        kept = keep_top_groups(sentences, perplexity, math.ceil(self.coarse_share * limit), request.tokenizer)
        active = np.flatnonzero(kept[owners(units, sentences)])
        scores = np.full(len(units), -np.inf)
        if len(active):
            scores[active] = self._iterate(request, [units[i] for i in active], limit)
        return scores

    def _iterate(self, request: CompressionRequest, units: Sequence[Unit], limit: int) -> np.ndarray:
        """Iterative token-level compression over ``units``; score = kept-in-pass flag + rank in its segment."""
        model, tokenizer = load_causal_lm(self.model)
        ids = tokenizer([u.text for u in units], add_special_tokens=False)["input_ids"]
        costs = np.asarray(request.tokenizer.count_many([u.text for u in units]), dtype=float)
        forced = np.asarray([u.forced for u in units])
        budget = limit - costs[forced].sum()
        context = PrunedContext(model, start_ids(tokenizer), self.context_tokens)
        scores = np.zeros(len(units))
        start = 0
        while start < len(units):
            end, size = start, 0
            while end < len(units) and (size < self.segment_tokens or end == start):
                size += len(ids[end])
                end += 1
            piece = [t for i in range(start, end) for t in ids[i]]
            bits = context.read(piece)
            lengths = np.asarray([len(ids[i]) for i in range(start, end)])
            owner = np.repeat(np.arange(end - start), lengths)
            unit_bits = np.bincount(owner, weights=bits, minlength=end - start) / np.maximum(lengths, 1)
            free = ~forced[start:end]
            remaining = costs[start:][~forced[start:]].sum()
            ratio = min(1.0, max(0.0, budget) / remaining) if remaining else 1.0
            keep = forced[start:end].copy()
            keep[free] = keep_by_cost(unit_bits[free], costs[start:end][free], ratio) if ratio > 0 else False
            budget -= costs[start:end][keep & free].sum()
            context.keep(piece, np.repeat(keep, lengths))
            scores[start:end] = keep + normalise(unit_bits)
            request.report(end, len(units))
            start = end
        return scores
