"""`rerank`: keep whole sentences by cross-encoder relevance to the question, or by centrality without one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..fill import top_up
from ..params import integer, number
from ..passages import paragraphs
from ..registry import register
from ..result import CompressionResult
from ..scoring.cross_encoder import embed_onnx, rerank_scores
from ..scoring.tfidf import tfidf_relevance
from ..segmentation import Unit
from .acc_rag import passage_owners
from .base import CompressionRequest, ExtractiveCompressor


def latin_share(text: str) -> float:
    """Share of the letters of ``text`` in the Latin script (1.0 when it has none)."""
    letters = [c for c in text if c.isalpha()]
    return sum(c < "\u0250" for c in letters) / len(letters) if letters else 1.0


@register
@dataclass
class RerankCompressor(ExtractiveCompressor):
    """Query-aware sentence and passage selection with a cross-encoder; fills the budget with whole sentences.

    With a question, each sentence is read together with the question by the cross-encoder cross-encoder/ms-marco-
    MiniLM-L-12-v2 (MS MARCO passage ranking, Nguyen et al. 2016; the Sentence-BERT cross-encoders of Reimers &
    Gurevych), bundled as INT8 ONNX. A sentence's score is its logit, plus ``passage_weight`` times the best logit
    of its passage (a passage is a blank-line paragraph, or one of the passages of `compress_passages`), plus
    ``neighbour_weight`` times the better of its neighbours' logits in the same passage (the sentence before or
    after the answering one often carries its subject), plus ``lexical_weight`` times its TF-IDF relevance to the
    question standardised to the logits' spread (a hybrid of lexical and neural ranking, as BM25 + cross-encoder
    fusion in retrieval: exact names and numbers the cross-encoder underweights still count). Long inputs are
    pre-ranked by TF-IDF and only the best ``candidates`` sentences are read by the cross-encoder (the others keep a
    score below every read one), which bounds the time. The cross-encoder knows English only: when under half of the
    letters of the question and the text's start are Latin, sentences are ranked by TF-IDF relevance instead
    (character bigrams in scripts without spaces). Without a question the score is centrality: the cosine
    similarity of the sentence's bge-small-en-v1.5 vector (Xiao et al. 2023, "C-Pack") to the document's mean
    vector, standardised over the document, plus ``lead_weight`` times a position prior that favours the first
    sentences (news and reports put the gist first). The budget is filled greedily with whole sentences, best first,
    kept in text order; when whole sentences leave more than a tenth of the budget unused, the best sentence left
    out is added cut at a word boundary, so the result holds 90-100% of the budget.

    Args:
        passage_weight: Weight (>= 0) of the passage's best sentence logit in each sentence's score.
        neighbour_weight: Weight (>= 0) of the better neighbouring sentence's logit in each sentence's score.
        lexical_weight: Weight (>= 0) of the standardised TF-IDF relevance in each read sentence's score.
        candidates: Read at most this many sentences (>= 1) with the cross-encoder, the best by TF-IDF.
        lead_weight: Without a question: weight (>= 0) of the position prior 1 / (1 + position / 3).
    """

    name = "rerank"
    summary = (
        "Cross-encoder (MiniLM-L12, MS MARCO) sentence + passage relevance to the question, or bge centrality "
        "without one; whole sentences fill the budget."
    )
    uses_question = True
    default_unit = "sentence"

    unit: str | None = field(default="sentence", init=False)
    passage_weight: float = 0.3
    neighbour_weight: float = 0.0
    lexical_weight: float = 0.0
    candidates: int = 32
    lead_weight: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        number("passage_weight", self.passage_weight, 0.0)
        number("neighbour_weight", self.neighbour_weight, 0.0)
        number("lexical_weight", self.lexical_weight, 0.0)
        integer("candidates", self.candidates)
        number("lead_weight", self.lead_weight, 0.0)

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        texts = [u.text for u in units]
        if not request.question:
            return self._centrality(texts, request)
        read = np.arange(len(texts))
        english = latin_share(request.question + " " + request.text[:2000]) >= 0.5
        needed = self.lexical_weight or len(texts) > self.candidates or not english
        prior = tfidf_relevance(texts, request.question) if needed else np.zeros(len(texts))
        if not english:  # the cross-encoder only knows English (MS MARCO): rank other scripts lexically
            logits = prior
        else:
            if len(texts) > self.candidates:
                read = np.sort(np.argsort(-prior, kind="stable")[: self.candidates])
            logits = rerank_scores(request.question, [texts[i] for i in read], progress=request.report)
        if self.lexical_weight and english and len(read) > 1:
            lexical = prior[read]
            spread = float(logits.std()) or 1.0
            logits = logits + self.lexical_weight * spread * (lexical - lexical.mean()) / (lexical.std() or 1.0)
        floor = float(logits.min()) - 1.0
        scores = np.full(len(texts), floor, dtype=float)
        scores[read] = logits
        owners = np.asarray(passage_owners(units, paragraphs(request.text)))
        best = np.full(owners.max() + 1 if len(owners) else 0, -np.inf)
        np.maximum.at(best, owners, scores)
        combined = scores + self.passage_weight * best[owners]
        if self.neighbour_weight:
            before = np.where(np.r_[False, owners[1:] == owners[:-1]], np.r_[-np.inf, scores[:-1]], -np.inf)
            after = np.where(np.r_[owners[:-1] == owners[1:], False], np.r_[scores[1:], -np.inf], -np.inf)
            near = np.maximum(before, after)
            combined += self.neighbour_weight * np.where(np.isfinite(near), near, floor)
        return combined

    def _centrality(self, texts: list[str], request: CompressionRequest) -> np.ndarray:
        vectors = embed_onnx(texts, progress=request.report)
        centroid = vectors.mean(axis=0)
        centroid /= np.linalg.norm(centroid) or 1.0
        similarity = vectors @ centroid
        similarity = (similarity - similarity.mean()) / (similarity.std() or 1.0)
        return similarity + self.lead_weight / (1.0 + np.arange(len(texts)) / 3.0)

    def build_result(
        self,
        request: CompressionRequest,
        original: int,
        units: Sequence[Unit],
        scores: np.ndarray,
        keep: Sequence[bool],
        start: float,
        scored_at: float,
        selected_at: float,
        kept_tokens: int | None = None,
    ) -> CompressionResult:
        """The whole-sentence selection, topped up to the budget (`promptshrink.fill.top_up`)."""
        limit = request.budget.limit(original)
        units, scores, keep, kept_tokens = top_up(units, scores, keep, limit, request.tokenizer, kept_tokens)
        return super().build_result(request, original, units, scores, keep, start, scored_at, selected_at, kept_tokens)
