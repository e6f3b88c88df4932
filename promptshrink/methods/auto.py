"""`auto`: pick the method by the shape of the input, from what the reader benchmark shows.

The choice (`CHOICES`, justified by the table in `benchmarks/README.md`, section "auto") depends on whether
there is a question, whether the input is a list of passages (RAG, few-shot demonstrations) or plain text, and
its length; `result.details["auto"]` says which method ran and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..params import flag
from ..passages import Passage, PassageAwareCompressor
from ..registry import register
from ..result import CompressionResult
from ..segmentation import Unit
from .base import CompressionRequest, Compressor

# input shape -> (method, options); see benchmarks/README.md "auto" for the measurements behind each line
CHOICES: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {
    "passages+question": ("acc_rag", ()),  # multidoc+gsm: 0.19 vs tfidf 0.17, distilled 0.14; rate is its ceiling
    "text+question": ("acc_rag", ()),  # qa+needle: 0.72 vs tfidf 0.71, distilled 0.63, selective_context 0.51
    "no question": ("acc_rag", ()),  # summary: 0.36 vs distilled 0.34, selective_context 0.30, tfidf 0.27
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
    options there. The default method. Every choice fills its budget: 90-100% of ``rate``/``target_tokens``
    (tests/test_auto.py checks each shape), never more.

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
    budget_is_ceiling = False  # no choice is (tests/test_auto.py keeps this in step with CHOICES); adaptive=True is

    unit: str | None = field(default="sentence", init=False)
    adaptive: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        flag("adaptive", self.adaptive)

    def choose(self, question: str | None, passages: Sequence[Passage] | None) -> tuple[str, Compressor]:
        from ..api import get_compressor

        method, options = ADAPTIVE if self.adaptive else CHOICES[input_shape(question, passages)]
        return method, get_compressor(method, **dict(options))

    def compress(self, request: CompressionRequest) -> CompressionResult:
        shape = input_shape(request.question, None)
        method, compressor = self.choose(request.question, None)
        return _tagged(compressor.compress(request), shape, method)

    def compress_passages(
        self, question: str | None, passages: list[Passage], request: CompressionRequest
    ) -> CompressionResult:
        shape = input_shape(question, passages)
        method, compressor = self.choose(question, passages)
        if isinstance(compressor, PassageAwareCompressor):
            result = compressor.compress_passages(question, passages, request)
        else:
            result = compressor.compress(request)
        return _tagged(result, shape, method)

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        raise NotImplementedError("auto delegates whole requests; it never scores units itself")


def _tagged(result: CompressionResult, shape: str, method: str) -> CompressionResult:
    result.details = {**result.details, "auto": {"input": shape, "method": method}}
    result.method = "auto"
    return result
