"""ACC-RAG (2025): adaptive context compression for RAG; keep adding relevant sentences until the query is covered."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BudgetError
from ..fill import top_up
from ..params import flag, integer, number
from ..passages import Passage, paragraphs
from ..registry import register
from ..result import CompressionResult, SegmentDecision
from ..scoring.embeddings import embed
from ..segmentation import Unit
from ..selection import cut_best_unit, render
from .base import CompressionRequest, ExtractiveCompressor

_WORD = re.compile(r"[\w$%.-]+")
# Function words only: generic stop lists also drop content words a question hinges on ("name", "fire", "bill").
_FUNCTION_WORDS = (
    "a an the and or but nor so yet of in on at to for with by from into onto over under about after before "
    "between through during is are was were be been being am do does did done has have had having will would "
    "can could should may might must shall it its this that these those there here he she they them their his "
    "her him we us our you your i me my not no as if than then also very just any all some what which who whom "
    "whose when where why how many much tell please give list describe explain"
)
_STOP = set(_FUNCTION_WORDS.split())


def content_terms(text: str) -> list[str]:
    """Lower-cased content words of ``text`` (no stop words or question words), in order, unique."""
    out: list[str] = []
    for w in _WORD.findall(text.lower()):
        w = w.strip(".-")
        if len(w) > 2 and w not in _STOP and w not in out:
            out.append(w)
    return out


def _stem(term: str) -> str:
    return term[:5] if term.isalpha() and len(term) > 5 else term.rstrip("s") if term.isalpha() else term


def covered(terms: Sequence[str], text: str) -> set[str]:
    """The terms present in ``text`` (word-prefix match on a crude stem, so 'named' covers 'name')."""
    words = {w.strip(".-") for w in _WORD.findall(text.lower())}
    return {t for t in terms if any(w.startswith(_stem(t)) for w in words)}


@register
@dataclass
class AccRagCompressor(ExtractiveCompressor):
    """Hierarchical relevance (passage-level + sentence-level MiniLM embeddings) and a sufficiency-driven selector.

    Sentences are ranked by ``(1 - doc_weight) * sim(sentence, q) + doc_weight * sim(passage, q)`` plus a
    lexical bonus for question terms; only passages within ``doc_margin`` of the best passage are read. The
    selector adds sentences in that order and stops when the question is judged sufficiently covered: all of
    its content terms are present and the marginal gain in embedding similarity of the selected set falls
    below ``min_gain`` (or ``patience`` additions in a row brought neither new terms nor gain, or the next
    score is ``gap`` below the best). These stopping rules apply only with ``adaptive=True``: then the budget is
    only a ceiling (simple questions stop earlier than multi-part ones, so the achieved ratio is often far below
    ``rate``). By default every passage is read and the budget is filled in relevance order, topped up to at least
    90% with the best sentence left out cut at a word boundary (`promptshrink.fill.top_up`), so the caller gets the
    size asked for. Without a question there is nothing to be sufficient for, so it fills the budget by similarity
    to the document centroid (all of it when the budget holds the whole input). ``details`` says how much was kept
    (``budget_tokens``, ``filled``) and why it stopped (``stop_reason``).
    Reference: ACC-RAG (adaptive context compression for retrieval-augmented generation), 2025.

    Args:
        doc_weight: Share in [0, 1] of the passage's similarity in a sentence's score.
        lexical_weight: Weight in [0, 1] of the share of question terms a sentence contains.
        doc_margin: Passages scoring more than this (>= 0) below the best passage are not read.
        min_gain: Once every question term is covered, stop when the similarity gain falls below this.
        gap: Once every question term is covered, stop at a sentence scoring this much (>= 0) below the best.
        patience: Stop after this many additions in a row that brought neither new terms nor gain.
        adaptive: Stop once the question is covered (ACC-RAG's adaptive rate): the budget becomes a ceiling.
    """

    name = "acc_rag"
    summary = (
        "RAG compression: passage+sentence embeddings, relevant sentences fill the budget; adaptive=True stops "
        "once the query is covered (rate is then a ceiling)."
    )
    uses_question = True
    default_unit = "sentence"
    budget_is_ceiling = False  # True only with adaptive=True

    unit: str | None = field(default="sentence", init=False)
    doc_weight: float = 0.3
    lexical_weight: float = 0.3
    doc_margin: float = 0.35
    min_gain: float = 0.02
    gap: float = 0.45
    patience: int = 2
    adaptive: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        number("doc_weight", self.doc_weight, 0.0, 1.0)
        number("lexical_weight", self.lexical_weight, 0.0, 1.0)
        number("doc_margin", self.doc_margin, 0.0)
        number("min_gain", self.min_gain)
        number("gap", self.gap, 0.0)
        integer("patience", self.patience)
        flag("adaptive", self.adaptive)

    def compress(self, request: CompressionRequest) -> CompressionResult:
        """Plain text: its paragraphs are the passages."""
        return self.compress_passages(request.question, paragraphs(request.text), request)

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        owners = passage_owners(units, paragraphs(request.text))
        return self._scores(request.question, list(units), owners, len(set(owners)), request.report)[0]

    def _scores(
        self,
        question: str | None,
        units: list[Unit],
        owners: list[int],
        n_passages: int,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
        """(sentence scores, passage similarities, sentence vectors, query vector, query terms)."""
        vectors = embed([u.text for u in units], progress=progress)
        docs = np.zeros((n_passages, vectors.shape[1]), dtype=np.float32)
        for v, o in zip(vectors, owners):
            docs[o] += v
        docs /= np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-9)
        if question:
            query, terms = embed([question])[0], content_terms(question)
        else:
            query, terms = vectors.mean(axis=0), []
            query = query / (np.linalg.norm(query) or 1.0)
        doc_sim = docs @ query
        sent_sim = vectors @ query
        lexical = np.asarray([len(covered(terms, u.text)) / len(terms) if terms else 0.0 for u in units])
        scores = (1 - self.doc_weight) * sent_sim + self.doc_weight * doc_sim[owners] + self.lexical_weight * lexical
        return scores, doc_sim, vectors, query, terms

    def compress_passages(
        self, question: str | None, passages: list[Passage], request: CompressionRequest
    ) -> CompressionResult:
        start = time.perf_counter()
        tok = request.tokenizer
        original = tok.count(request.text)
        limit = request.budget.limit(original)
        if request.budget.keeps_everything(original):  # text that fits comes back as it is
            return self.unchanged(request, original, start)
        units = self.units(request)
        owners = passage_owners(units, passages)
        scores, doc_sim, vectors, query, terms = self._scores(question, units, owners, len(passages), request.report)
        scored_at = time.perf_counter()
        keep = [u.forced for u in units]
        if any(keep) and tok.count(render(units, keep)) > limit:
            raise BudgetError(
                f"the protected content alone needs {tok.count(render(units, keep))} tokens but the budget is "
                f"{limit}; raise the budget or protect less (keep=..., code blocks, URLs, numbers)"
            )
        readable = (
            doc_sim >= doc_sim.max() - self.doc_margin
            if question and self.adaptive
            else np.ones(len(passages), dtype=bool)
        )
        trace, reason = self._select(units, owners, scores, vectors, query, terms, readable, keep, limit, tok)
        kept_text = render(units, keep)
        while tok.count(kept_text) > limit:  # BPE merges across joins: drop the weakest selected sentence
            weakest = min((i for i, k in enumerate(keep) if k and not units[i].forced), key=lambda i: scores[i])
            keep[weakest] = False
            kept_text = render(units, keep)
        if not self.adaptive:
            units, scores, keep, _ = top_up(units, scores, keep, limit, tok)
            owners, kept_text = passage_owners(units, passages), render(units, keep)
        if not any(keep):  # the budget holds no whole sentence: the most relevant one, cut to fit
            units, scores, keep, _ = cut_best_unit(units, scores, limit, tok)
            owners, kept_text, reason = passage_owners(units, passages), render(units, keep), "budget_below_one_unit"
        kept_tokens = tok.count(kept_text)
        end = time.perf_counter()
        segments = [
            SegmentDecision(u.text, u.start, u.end, float(s), bool(k), u.forced) for u, s, k in zip(units, scores, keep)
        ]
        selected_terms = covered(terms, kept_text)
        details: dict[str, Any] = {
            "stop_reason": reason,
            "query_terms": terms,
            "uncovered_terms": [t for t in terms if t not in selected_terms],
            "budget_tokens": limit,
            "filled": round(kept_tokens / limit, 4),
            "adaptive": self.adaptive,
            "selection": trace,
            "passages": [
                {
                    "id": p.id,
                    "metadata": p.metadata,
                    "score": round(float(doc_sim[k]), 4),
                    "read": bool(readable[k]),
                    "selected_sentences": [i for i, o in enumerate(owners) if o == k and keep[i]],
                }
                for k, p in enumerate(passages)
            ],
        }
        return CompressionResult(
            kept_text,
            original,
            kept_tokens,
            self.name,
            tok.name,
            request.budget.describe(),
            segments,
            {"score_s": scored_at - start, "select_s": end - scored_at, "total_s": end - start},
            details,
        )

    def _select(
        self,
        units: list[Unit],
        owners: list[int],
        scores: np.ndarray,
        vectors: np.ndarray,
        query: np.ndarray,
        terms: list[str],
        readable: np.ndarray,
        keep: list[bool],
        limit: int,
        tok: Any,
    ) -> tuple[list[dict[str, Any]], str]:
        """Add sentences best-first into ``keep``; return the trace and why it stopped."""
        costs = tok.count_many([u.text for u in units])
        used = sum(c for c, k in zip(costs, keep) if k)
        total = vectors[np.asarray(keep, dtype=bool)].sum(axis=0)
        similarity = float(total @ query / (np.linalg.norm(total) or 1.0)) if any(keep) else 0.0
        have = covered(terms, render(units, keep))
        order = sorted(
            (i for i in range(len(units)) if not keep[i] and readable[owners[i]]), key=lambda i: (-scores[i], i)
        )
        trace: list[dict[str, Any]] = []
        stale, best, full = 0, None, False
        for i in order:
            stop = best is not None and bool(terms) and len(have) == len(terms) and self.adaptive
            if stop and scores[i] < best - self.gap:
                return trace, "score_gap"
            if used + costs[i] > limit:
                full = True
                continue
            keep[i], used = True, used + costs[i]
            best = scores[i] if best is None else best
            total = total + vectors[i]
            new_similarity = float(total @ query / (np.linalg.norm(total) or 1.0))
            gain, similarity = new_similarity - similarity, new_similarity
            new_terms = covered(terms, units[i].text) - have
            have |= new_terms
            trace.append(
                {
                    "unit": i,
                    "score": round(float(scores[i]), 4),
                    "gain": round(gain, 4),
                    "coverage": round(len(have) / len(terms), 4) if terms else None,
                }
            )
            if not terms or not self.adaptive:
                continue
            if len(have) == len(terms) and gain < self.min_gain:
                return trace, "sufficient"
            stale = 0 if new_terms or gain >= self.min_gain else stale + 1
            if stale >= self.patience:
                return trace, "saturated"
        return trace, "budget" if full else ("budget_filled_no_query_terms" if not terms else "exhausted")


def passage_owners(units: Sequence[Unit], passages: Sequence[Passage]) -> list[int]:
    """Index of the passage holding each unit's first non-space character (the previous one for separators)."""
    starts = np.asarray([p.start for p in passages]) if passages else np.zeros(1, dtype=int)
    anchors = [u.start + len(u.text) - len(u.text.lstrip()) for u in units]
    return [int(max(0, np.searchsorted(starts, a, side="right") - 1)) for a in anchors]
