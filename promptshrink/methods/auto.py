"""`auto`: pick the method by the shape of the input, from what the reader benchmark shows.

The choice (`CHOICES`, justified by the table in `benchmarks/README.md`, section "auto") depends on whether
there is a question, whether the input is a list of passages (RAG, few-shot demonstrations) or plain text, and
its length; `result.details["auto"]` says which method ran and why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..params import flag
from ..passages import Passage, PassageAwareCompressor
from ..registry import get_compressor, get_method, register
from ..result import CompressionResult
from .base import CompressionRequest, Compressor

# input shape -> (method, options); see benchmarks/README.md "auto" for the measurements behind each line
CHOICES: dict[str, tuple[str, tuple[tuple[str, Any], ...]]] = {
    "passages+question": ("acc_rag", ()),  # multidoc+gsm: 0.19 vs tfidf 0.17, distilled 0.14; rate is its ceiling
    "text+question": ("acc_rag", ()),  # qa+needle: 0.72 vs tfidf 0.71, distilled 0.63, selective_context 0.51
    "no question": ("acc_rag", ()),  # summary: 0.36 vs distilled 0.34, selective_context 0.30, tfidf 0.27
}


def input_shape(question: str | None, passages: Sequence[Passage] | None) -> str:
    """The `CHOICES` key of a request."""
    if not question:
        return "no question"
    return "passages+question" if passages is not None and len(passages) > 1 else "text+question"


@register
@dataclass
class AutoCompressor(Compressor):
    """Delegates to the method the benchmark found best for this kind of input (see `CHOICES`), run with the
    options there. The default method. When the choice's budget is only a ceiling (`acc_rag` stops once the
    question is covered), fewer tokens than asked may come back unless ``fill_budget`` is set.

    Args:
        fill_budget: Make a chosen method whose budget is a ceiling fill it (its own ``fill_budget`` option), so the
            result is as close to the asked size as the other methods'.
    """

    name = "auto"
    summary = (
        "The default: chooses the method by input (question or not, passages or plain text; table in "
        "benchmarks/README). Rate may be a ceiling; fill_budget=True fills it."
    )
    uses_question = True
    budget_is_ceiling = True  # some CHOICES are (acc_rag); tests/test_auto.py keeps this in step with CHOICES

    fill_budget: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        flag("fill_budget", self.fill_budget)

    def choose(self, question: str | None, passages: Sequence[Passage] | None) -> tuple[str, Compressor]:
        method, options = CHOICES[input_shape(question, passages)]
        extra = {"fill_budget": True} if self.fill_budget and get_method(method).budget_is_ceiling else {}
        return method, get_compressor(method, **dict(options), **extra)

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


def _tagged(result: CompressionResult, shape: str, method: str) -> CompressionResult:
    result.details = {**result.details, "auto": {"input": shape, "method": method}}
    result.method = "auto"
    return result
