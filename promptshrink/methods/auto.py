"""`auto`: pick the method by the shape of the input, from what the reader benchmark shows.

The choice (`CHOICES`, justified by the table in `benchmarks/README.md`, section "auto") depends on whether
there is a question, whether the input is a list of passages (RAG, few-shot demonstrations) or plain text, and
its length; `result.details["auto"]` says which method ran and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..fill import FILL_SHARE, top_up
from ..params import flag
from ..passages import Passage, PassageAwareCompressor
from ..registry import get_compressor, register
from ..result import CompressionResult, SegmentDecision
from ..segmentation import Unit
from ..selection import render
from .base import CompressionRequest, Compressor

# input shape -> (method, options); see benchmarks/README.md "auto" for the measurements behind each line: the
# full suite (suite_full.json: Qwen2.5-Coder-1.5B reader on the H200, 100 items per task) where it has read every
# task of the shape, else the CPU quick suite (reader_quick.json: 0.5B reader, 10 items per task); mean score at
# achieved ratios 0.5/0.25/0.1
CHOICES: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {
    # full suite, multidoc: 0.521 vs rerank 0.520, acc_rag 0.520 (as auto before), tfidf 0.511; a third of
    # acc_rag's CPU time (benchmarks.latency --passages)
    "passages+question": ("rerank", (("lexical_weight", 0.5),)),
    "text+question": ("tfidf", ()),  # quick, qa+needle: 0.635 vs acc_rag 0.600, distilled 0.590, rerank 0.586
    "no question": ("rerank", ()),  # quick, summary: 0.459 vs acc_rag 0.369, tfidf 0.341, distilled 0.291
}
ADAPTIVE = ("acc_rag", (("adaptive", True),))  # auto(adaptive=True), whatever the input shape


def input_shape(question: str | None, passages: Sequence[Passage] | None) -> str:
    """The `CHOICES` key of a request."""
    if not question:
        return "no question"
    return "passages+question" if passages is not None and len(passages) > 1 else "text+question"


@register
@dataclass
class AutoCompressor(Compressor):
    """Delegates to the method the benchmark found best for this kind of input (see `CHOICES`), run with the
    options there. The default method. The result fills its budget: 90-100% of ``rate``/``target_tokens``, never
    more (a choice's whole-unit selection below 90% is topped up with the best unit left out, cut at a word
    boundary: `promptshrink.fill.top_up`; tests/methods/test_auto.py checks every shape).

    Args:
        adaptive: Keep fewer tokens than asked when fewer suffice: run `acc_rag` with ``adaptive=True``, which stops
            once the question is covered (the budget becomes a ceiling; ``details["stop_reason"]`` says why).
    """

    name = "auto"
    summary = (
        "The default: chooses the method by input (question or not, passages or plain text; table in "
        "benchmarks/README); fills the budget. adaptive=True stops early once the question is covered (ACC-RAG)."
    )
    uses_question = True
    # no choice is a ceiling (tests/methods/test_auto.py keeps this in step with CHOICES); adaptive=True is
    budget_is_ceiling = False

    adaptive: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        flag("adaptive", self.adaptive)

    def choose(self, question: str | None, passages: Sequence[Passage] | None) -> tuple[str, Compressor]:
        method, options = ADAPTIVE if self.adaptive else CHOICES[input_shape(question, passages)]
        return method, get_compressor(method, **dict(options))

    def compress(self, request: CompressionRequest) -> CompressionResult:
        shape = input_shape(request.question, None)
        method, compressor = self.choose(request.question, None)
        return _tagged(self._filled(compressor.compress(request), request), shape, method)

    def compress_passages(
        self, question: str | None, passages: list[Passage], request: CompressionRequest
    ) -> CompressionResult:
        shape = input_shape(question, passages)
        method, compressor = self.choose(question, passages)
        if isinstance(compressor, PassageAwareCompressor):
            result = compressor.compress_passages(question, passages, request)
        else:
            result = compressor.compress(request)
        return _tagged(self._filled(result, request), shape, method)

    def _filled(self, result: CompressionResult, request: CompressionRequest) -> CompressionResult:
        """``result`` topped up to 90% of its budget when its whole units fall short (not with ``adaptive``)."""
        limit = request.budget.limit(result.original_tokens)
        segments = result.segments
        if self.adaptive or result.compressed_tokens >= FILL_SHARE * limit or any(s.rewritten for s in segments):
            return result
        units = [Unit(s.text, s.start, s.end, s.forced) for s in segments]
        scores = np.asarray([-np.inf if s.score is None else s.score for s in segments], dtype=float)
        keep = [s.kept for s in segments]
        units, scores, keep, kept = top_up(units, scores, keep, limit, request.tokenizer, result.compressed_tokens)
        result.text, result.compressed_tokens = render(units, keep), kept
        result.segments = [
            SegmentDecision(u.text, u.start, u.end, float(v) if np.isfinite(v) else None, k, u.forced)
            for u, v, k in zip(units, scores, keep)
        ]
        return result


def _tagged(result: CompressionResult, shape: str, method: str) -> CompressionResult:
    result.details = {**result.details, "auto": {"input": shape, "method": method}}
    result.method = "auto"
    return result
