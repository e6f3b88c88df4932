"""Our implementation of the LongLLMLingua ideas (Jiang et al., ACL 2024); not the `llmlingua` package."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..model_loading import DEFAULT_LM
from ..params import flag, integer, non_empty, number
from ..registry import register
from ..result import CompressionResult
from ..scoring.coarse import documents, keep_by_cost, keep_top_groups, owners
from ..scoring.conditional import question_loglik
from ..scoring.lm import surprisal, to_units
from ..scoring.normalise import normalise
from ..segmentation import Unit, protected_spans, segment
from ..selection import select_or_cut
from .base import CompressionRequest, ExtractiveCompressor


@register
@dataclass
class LongLLMLinguaCompressor(ExtractiveCompressor):
    """Question-aware coarse-to-fine compression.

    Documents (paragraphs, or groups of ``doc_sentences`` sentences) are ranked by log p(question | document)
    under a small LM and the best kept until they hold ``coarse_share`` x the budget (default 1: as in the paper's
    coarse stage, documents are kept in rank order until the budget is reached, so the fine stage trims little
    and the top document stays almost whole; a larger share spreads the fine pruning over more documents and
    cut answer spans in the benchmark's multi-document QA). Each kept document gets its
    own ratio, from base + ``dynamic_ratio`` for the best to base - ``dynamic_ratio`` for the worst, and keeps
    its units with the highest contrastive perplexity I(x) - I(x | question) (how much the question makes a
    token more likely). Without a question, documents and units are ranked by plain perplexity.
    ``reorder=True`` puts the kept documents in relevance order: the output is then no longer an ordered
    subsequence of the input (said in ``result.details``).
    Reference: Jiang et al., "LongLLMLingua: Accelerating and Enhancing LLMs in Long Context Scenarios via Prompt
    Compression", ACL 2024.

    Args:
        model: Small causal LM for the question likelihood and the (contrastive) perplexity.
        coarse_share: Documents kept by the coarse stage, as a multiple (>= 1) of the budget.
        dynamic_ratio: Spread in [0, 1] of the per-document kept ratios around the base ratio.
        reorder: Put the kept documents in relevance order (the output is then not in input order).
        doc_sentences: Sentences per document when the text has no paragraphs.
    """

    name = "longllmlingua"
    summary = "Our LongLLMLingua: question-conditioned document ranking, dynamic ratios, contrastive perplexity."
    uses_question = True
    default_unit = "word"

    model: str = DEFAULT_LM
    coarse_share: float = 1.0
    dynamic_ratio: float = 0.25
    reorder: bool = False
    doc_sentences: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        non_empty("model", self.model)
        self.coarse_share = number("coarse_share", self.coarse_share, 1.0)
        self.dynamic_ratio = number("dynamic_ratio", self.dynamic_ratio, 0.0, 1.0)
        flag("reorder", self.reorder)
        integer("doc_sentences", self.doc_sentences)

    def compress(self, request: CompressionRequest) -> CompressionResult:
        start = time.perf_counter()
        original = request.tokenizer.count(request.text)
        if request.budget.keeps_everything(original):
            return self.unchanged(request, original, start)
        limit = request.budget.limit(original)
        units = self.units(request)
        scored_at = time.perf_counter()
        scores, docs, relevance = self._plan(request, units, limit)
        selected_at = time.perf_counter()
        units, scores, keep, kept = select_or_cut(units, scores, limit, request.tokenizer)
        result = self.build_result(request, original, units, scores, keep, start, scored_at, selected_at, kept)
        ranking = [int(i) for i in np.argsort(-relevance, kind="stable")]
        result.details["document_relevance"] = [round(float(r), 4) for r in relevance]
        if self.reorder:
            result.text = self._reordered(request, units, scores, keep, owners(units, docs), ranking, limit)
            result.compressed_tokens = request.tokenizer.count(result.text)
            result.details["document_order"] = ranking
            result.details["extractive_order"] = False
            result.details["note"] = "documents reordered by relevance: the output is not in the input's order"
        return result

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return self._plan(request, units, request.budget.limit(request.tokenizer.count(request.text)))[0]

    def _plan(
        self, request: CompressionRequest, units: Sequence[Unit], limit: int
    ) -> tuple[np.ndarray, list[Unit], np.ndarray]:
        """Unit scores (-inf outside the kept documents), the documents and their relevance."""
        text, question = request.text, request.question
        spans = protected_spans(text, request.keep, protect_numbers=request.protect_numbers)
        docs = documents(segment(text, "sentence", spans), self.doc_sentences)
        plain = surprisal(text, self.model, progress=request.report)
        if question:
            relevance = question_loglik([d.text for d in docs], question, self.model, progress=request.report)
            conditioned = surprisal(text, self.model, prefix=f"Question: {question}\n", progress=request.report)
            plain.values = plain.values - conditioned.values
        else:
            relevance = to_units(plain, docs, "mean")
        unit_scores = to_units(plain, units, "mean")
        kept = keep_top_groups(docs, relevance, math.ceil(self.coarse_share * limit), request.tokenizer)
        owner = owners(units, docs)
        costs = np.asarray(request.tokenizer.count_many([u.text for u in units]), dtype=float)
        kept_ids = [i for i in np.argsort(-relevance, kind="stable") if kept[i]]
        doc_cost = np.bincount(owner, weights=costs, minlength=len(docs))
        ratios = self._ratios(doc_cost[kept_ids], limit)
        scores = np.full(len(units), -np.inf)
        active = kept[owner]
        scores[active] = normalise(unit_scores[active])
        for doc, ratio in zip(kept_ids, ratios):
            members = np.flatnonzero(owner == doc)
            scores[members] += keep_by_cost(unit_scores[members], costs[members], ratio)
        return scores, docs, relevance

    def _ratios(self, costs: np.ndarray, limit: int) -> np.ndarray:
        """Per-document kept ratios, most relevant first, spread by ``dynamic_ratio`` and summing to the budget."""
        if not len(costs):
            return costs
        spread = np.linspace(1.0, -1.0, len(costs)) if len(costs) > 1 else np.zeros(1)
        base = limit / costs.sum()
        for _ in range(5):  # re-centre after clipping so the ratios spend the budget
            ratios = np.clip(base + self.dynamic_ratio * spread, 0.0, 1.0)
            spent = (ratios * costs).sum()
            if spent <= 0 or abs(spent - limit) < 1:
                break
            base += (limit - spent) / costs.sum()
        return ratios

    @staticmethod
    def _reordered(
        request: CompressionRequest,
        units: Sequence[Unit],
        scores: np.ndarray,
        keep: list[bool],
        owner: np.ndarray,
        ranking: list[int],
        limit: int,
    ) -> str:
        """Kept units grouped by document in relevance order; the lowest-scoring go until it fits the budget."""

        def render() -> str:
            pieces = ["".join(u.text for u, o, k in zip(units, owner, keep) if k and o == d) for d in ranking]
            return "\n\n".join(p.strip() for p in pieces if p.strip())

        text = render()
        droppable = sorted((i for i, k in enumerate(keep) if k and not units[i].forced), key=lambda i: scores[i])
        while request.tokenizer.count(text) > limit and droppable:
            keep[droppable.pop(0)] = False
            text = render()
        return text
