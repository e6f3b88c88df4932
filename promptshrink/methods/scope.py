"""SCOPE (2024): generative chunk-and-rewrite compression with semantic chunks and dynamic per-chunk ratios."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import BudgetError, InvalidInputError
from ..model_loading import DEFAULT_LM, LARGE_LM
from ..params import integer, non_empty, number
from ..registry import register
from ..result import CompressionResult, SegmentDecision
from ..rewriting import (
    ChatRewriter,
    RewriteJob,
    extractive_compress,
    fit_words,
    key_terms,
    max_new_tokens,
    missing_terms,
)
from ..scoring.chunking import adjacent_similarity, semantic_chunks
from ..scoring.embeddings import embed
from ..segmentation import Unit
from ..target_tokenizer import TargetTokenizer
from .base import CompressionRequest, ExtractiveCompressor

EXTRACTIVE = "extractive"


@dataclass
class Chunk:
    """Sentences [first, last) of the input, with the decision taken for them."""

    text: str
    start: int
    end: int
    tokens: int
    forced: bool
    relevance: float = 0.0
    budget: int = 0
    body: str = ""
    action: str = "keep"

    @property
    def lead(self) -> str:
        return self.text[: len(self.text) - len(self.text.lstrip())]


@register
@dataclass
class ScopeCompressor(ExtractiveCompressor):
    """Chunk by adjacent-sentence similarity (MiniLM), give each chunk a ratio from its relevance, rewrite.

    Relevance is to the question (or to the whole document without one). The most relevant chunks are kept
    verbatim, the least relevant are dropped, the rest are rewritten to their own budget: by a chat LM
    (``rewriter="large-lm"``, greedy, the ``max_rewrites`` least relevant of them) or extractively by
    self-information (the others, and every chunk when ``rewriter="extractive"``). A rewrite that drops a
    key term (number, name, quoted string) gets it re-inserted if it fits, else the chunk falls back to the
    extractive compressor; the output never exceeds the budget in the target tokenizer.
    Reference: SCOPE (generative prompt compression by chunking and summarisation), 2024.

    Args:
        rewriter: ``large-lm`` or another chat LM name for generative rewrites, or ``extractive`` for none.
        scorer_model: Causal LM whose self-information drives the extractive compression of chunks.
        max_rewrites: Most chunks rewritten by the LM per call (>= 0); the others are compressed extractively.
        batch_size: Chunks rewritten per LM batch.
        max_chunk_tokens: Largest chunk in target tokens; bigger semantic chunks are split.
        min_chunk_tokens: Smallest chunk in target tokens (below ``max_chunk_tokens``); smaller ones are merged.
        boundary_quantile: Adjacent-sentence similarity quantile in [0, 1] under which a chunk boundary is placed.
        spread: How far (>= 0) a chunk's kept ratio moves with its standardised relevance.
        keep_ratio: Chunks whose ratio reaches this (in (0, 1]) are kept verbatim.
        drop_ratio: Chunks whose ratio falls below this (in [0, keep_ratio)) are dropped.
    """

    name = "scope"
    summary = "Generative chunk-and-rewrite: semantic chunks, dynamic per-chunk ratios, LM rewrites keeping key terms."
    extractive = False
    uses_question = True
    default_unit = "sentence"

    unit: str | None = field(default="sentence", init=False)
    rewriter: str = LARGE_LM
    scorer_model: str = DEFAULT_LM
    max_rewrites: int = 6
    batch_size: int = 6
    max_chunk_tokens: int = 160
    min_chunk_tokens: int = 24
    boundary_quantile: float = 0.35
    spread: float = 0.35
    keep_ratio: float = 0.8
    drop_ratio: float = 0.15

    def __post_init__(self) -> None:
        super().__post_init__()
        non_empty("rewriter", self.rewriter)
        non_empty("scorer_model", self.scorer_model)
        integer("max_rewrites", self.max_rewrites, 0)
        integer("batch_size", self.batch_size)
        integer("min_chunk_tokens", self.min_chunk_tokens)
        integer("max_chunk_tokens", self.max_chunk_tokens, self.min_chunk_tokens + 1)
        number("boundary_quantile", self.boundary_quantile, 0.0, 1.0)
        number("spread", self.spread, 0.0)
        number("keep_ratio", self.keep_ratio, 0.0, 1.0, exclusive_low=True)
        number("drop_ratio", self.drop_ratio, 0.0, self.keep_ratio)
        if self.drop_ratio == self.keep_ratio:
            raise InvalidInputError(f"drop_ratio must be below keep_ratio ({self.keep_ratio}), got {self.drop_ratio}")

    def score_units(self, request: CompressionRequest, units: list[Unit]) -> np.ndarray:
        """Sentence relevance to the question (or document); used for chunking and chunk priorities."""
        vectors = embed([u.text for u in units])
        return vectors @ self._query(request, vectors)

    def _query(self, request: CompressionRequest, vectors: np.ndarray) -> np.ndarray:
        if request.question:
            return embed([request.question])[0]
        centroid = vectors.mean(axis=0)
        return centroid / (np.linalg.norm(centroid) or 1.0)

    def compress(self, request: CompressionRequest) -> CompressionResult:
        start = time.perf_counter()
        tok = request.tokenizer
        original = tok.count(request.text)
        limit = request.budget.limit(original)
        if request.budget.keeps_everything(original):
            return self.unchanged(request, original, start)
        units = self.units(request)
        forced_text = "".join(u.text for u in units if u.forced).strip()
        if forced_text and tok.count(forced_text) > limit:
            raise BudgetError(
                f"the protected content alone needs {tok.count(forced_text)} tokens but the budget is {limit}; "
                "raise the budget or protect less (keep=..., code blocks, URLs, numbers)"
            )
        chunks = self._chunk(request, units)
        chunked_at = time.perf_counter()
        self._allocate(chunks, limit)
        stats = self._rewrite(request, chunks)
        rewritten_at = time.perf_counter()
        text = self._fit(request, chunks, limit)
        end = time.perf_counter()
        segments = [
            SegmentDecision(
                c.text, c.start, c.end, c.relevance, bool(c.body), c.forced, c.body if c.action != "keep" else None
            )
            for c in chunks
        ]
        details = {
            "rewriter": EXTRACTIVE if self.rewriter == EXTRACTIVE else f"generative:{self.rewriter}",
            "note": "chunks beyond max_rewrites (and rewrites that lost a key term or overshot) are compressed "
            "extractively by self-information",
            **stats,
            "chunks": [
                {
                    "start": c.start,
                    "end": c.end,
                    "tokens": c.tokens,
                    "relevance": round(c.relevance, 4),
                    "budget": c.budget,
                    "action": c.action,
                }
                for c in chunks
            ],
        }
        return CompressionResult(
            text,
            original,
            tok.count(text),
            self.name,
            tok.name,
            request.budget.describe(),
            segments,
            {
                "chunk_s": chunked_at - start,
                "rewrite_s": rewritten_at - chunked_at,
                "fit_s": end - rewritten_at,
                "total_s": end - start,
            },
            details,
        )

    def _chunk(self, request: CompressionRequest, units: list[Unit]) -> list[Chunk]:
        costs = request.tokenizer.count_many([u.text for u in units])
        vectors = embed([u.text for u in units], progress=request.report)
        relevance = vectors @ self._query(request, vectors)
        hard = {i for i, u in enumerate(units) if u.forced} | {i - 1 for i, u in enumerate(units) if u.forced}
        hard |= {i - 1 for i, u in enumerate(units) if i and "\n\n" in u.text[: len(u.text) - len(u.text.lstrip())]}
        ranges = semantic_chunks(
            adjacent_similarity(vectors),
            costs,
            hard_breaks=sorted(hard),
            quantile=self.boundary_quantile,
            max_tokens=self.max_chunk_tokens,
            min_tokens=self.min_chunk_tokens,
        )
        chunks = []
        for i, j in ranges:
            text = "".join(u.text for u in units[i:j])
            vec = vectors[i:j].mean(axis=0)
            q = self._query(request, vectors)
            rel = 0.5 * float(vec @ q / (np.linalg.norm(vec) or 1.0)) + 0.5 * float(relevance[i:j].max())
            forced = any(u.forced for u in units[i:j])
            chunks.append(Chunk(text, units[i].start, units[j - 1].end, sum(costs[i:j]), forced, rel))
        return chunks

    def _allocate(self, chunks: list[Chunk], limit: int) -> None:
        """Per-chunk budgets: ratio = base + spread * standardised relevance, base solved so the sum fits."""
        free = [c for c in chunks if not c.forced]
        room = limit - sum(c.tokens for c in chunks if c.forced)
        if not free:
            return
        rel = np.asarray([c.relevance for c in free])
        z = (rel - rel.mean()) / (rel.std() or 1.0)
        sizes = np.asarray([c.tokens for c in free])

        def costs(base: float) -> np.ndarray:
            ratio = np.clip(base + self.spread * z, 0.0, 1.0)
            cost = np.floor(ratio * sizes)
            return np.where(ratio >= self.keep_ratio, sizes, np.where(ratio < self.drop_ratio, 0, cost))

        lo, hi = -3.0, 3.0
        for _ in range(50):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if costs(mid).sum() <= room else (lo, mid)
        for c, b in zip(free, costs(lo)):
            c.budget = int(b)
            c.action = "keep" if b >= c.tokens else ("drop" if b == 0 else "compress")
        for c in chunks:
            if c.forced:
                c.budget, c.action = c.tokens, "keep"

    def _rewrite(self, request: CompressionRequest, chunks: list[Chunk]) -> dict[str, object]:
        tok = request.tokenizer
        todo = [c for c in chunks if c.action == "compress"]
        generative: list[Chunk] = []
        if self.rewriter != EXTRACTIVE:
            generative = sorted(todo, key=lambda c: (c.budget / c.tokens, c.start))[: self.max_rewrites]
        stats: dict[str, object] = {"generated_tokens": 0, "generate_s": 0.0, "rewritten_chunks": 0, "fallbacks": 0}
        if generative:
            writer = ChatRewriter(self.rewriter, self.batch_size)
            lm_counts = writer.lm_tokens([c.text for c in generative])
            jobs = [
                RewriteJob(
                    c.text.strip(),
                    max(3, int(c.budget * 0.6)),
                    max_new_tokens(c.budget, n, c.tokens),
                    tuple(key_terms(c.text, _term_limit(c.budget))),
                )
                for c, n in zip(generative, lm_counts)
            ]
            began = time.perf_counter()
            outputs, stats["generated_tokens"] = writer.rewrite(jobs, request.seed, request.report)
            stats["generate_s"] = round(time.perf_counter() - began, 3)
            for c, job, out in zip(generative, jobs, outputs):
                body = self._accept(out, job.terms, c.budget, tok)
                if body is None:
                    stats["fallbacks"] = int(stats["fallbacks"]) + 1  # type: ignore[call-overload]
                    c.action = "fallback-extractive"
                else:
                    c.body, c.action = body, "rewrite"
                    stats["rewritten_chunks"] = int(stats["rewritten_chunks"]) + 1  # type: ignore[call-overload]
        for i, c in enumerate(chunks):
            if c.action == "keep":
                c.body = c.text.strip()
            elif c.action in ("compress", "fallback-extractive"):
                c.body = extractive_compress(
                    c.text, c.budget, tok, key_terms(c.text, _term_limit(c.budget)), self.scorer_model
                )
                c.action = "extractive" if c.action == "compress" else c.action
            request.report(i + 1, len(chunks))
        return stats

    @staticmethod
    def _accept(out: str, terms: tuple[str, ...], budget: int, tok: TargetTokenizer) -> str | None:
        """The rewrite, with lost key terms re-inserted if that fits; None when it must fall back."""
        out = fit_words(out, budget, tok)
        if not out:
            return None
        missing = missing_terms(terms, out)
        if missing:
            out = f"{out} ({'; '.join(missing)})"
        return out if tok.count(out) <= budget else None

    def _fit(self, request: CompressionRequest, chunks: list[Chunk], limit: int) -> str:
        """Reassemble in order; while joins push the total over the limit, shrink the least relevant chunk."""
        tok = request.tokenizer
        while True:
            text = "".join(c.lead + c.body for c in chunks if c.body).lstrip()
            excess = tok.count(text) - limit
            if excess <= 0:
                return text
            victims = sorted((c for c in chunks if c.body and not c.forced), key=lambda c: (c.relevance, c.start))
            if not victims:
                raise BudgetError(f"the protected content alone needs more than the budget of {limit} tokens")
            c = victims[0]
            c.budget = max(0, tok.count(c.body) - excess - 1)
            c.body = extractive_compress(c.text, c.budget, tok, key_terms(c.text), self.scorer_model)
            c.action = "drop" if not c.body else "extractive"


def _term_limit(budget: int) -> int:
    """How many key terms a chunk rewritten to ``budget`` tokens can be asked to keep (about one per 8 tokens)."""
    return max(1, budget // 8)
