"""The one compression pipeline: options checked once -> registry instance -> JSON splice -> `compress_many`.

Every entry point goes through here: `promptshrink.compress`/`compress_batch` (`compress_texts`),
`compress_messages`/`compress_passages` (`plan` + `Plan.run`), the service and its micro-batcher, the proxy, the
Ray app and the batch job. A `Plan` is the decisions made once per call (method, instance, tokenizer, deadline).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from .budget import Budget
from .errors import BudgetError, InvalidInputError
from .json_splice import compress_request, json_regions
from .methods.base import CompressionRequest, Compressor
from .model_loading import use_device
from .question_split import split_trailing_question
from .registry import get_compressor
from .request import CompressOptions, check_text, check_unicode
from .result import CompressionResult, SegmentDecision
from .target_tokenizer import TargetTokenizer, get_tokenizer

_UNSET = object()


def make_request(
    text: str,
    options: CompressOptions,
    tokenizer: TargetTokenizer,
    deadline: float | None,
    *,
    question: str | None | object = _UNSET,
    budget: Budget | None = None,
) -> CompressionRequest:
    """The compressor's view of ``text`` under ``options`` (``question``/``budget`` override the options')."""
    return CompressionRequest(
        text=text,
        budget=options.budget if budget is None else budget,
        tokenizer=tokenizer,
        question=options.question if question is _UNSET else question,  # type: ignore[arg-type]
        keep=options.keep,
        protect_numbers=options.protect_numbers,
        seed=options.seed,
        progress=options.progress,
        deadline=deadline,
        options=options,
    )


@dataclass(frozen=True)
class Plan:
    """What one call runs: its options, the method's shared instance, the target tokenizer and the deadline."""

    options: CompressOptions
    method: str
    compressor: Compressor
    tokenizer: TargetTokenizer
    deadline: float | None

    def request(
        self, text: str, *, question: str | None | object = _UNSET, budget: Budget | None = None
    ) -> CompressionRequest:
        return make_request(text, self.options, self.tokenizer, self.deadline, question=question, budget=budget)

    @contextmanager
    def on_device(self) -> Iterator[None]:
        """The block's LM work runs on the options' device (methods without a model ignore it)."""
        with use_device(self.options.device if self.compressor.requires_lm else None):
            yield

    def run(self, requests: Sequence[CompressionRequest]) -> list[CompressionResult]:
        """Compress ``requests``: JSON through the string-value splicer, the rest in one `compress_many`."""
        with self.on_device():
            plain = [i for i, r in enumerate(requests) if not json_regions(r.text)]
            results: list[CompressionResult | None] = [None] * len(requests)
            for i, result in zip(plain, self.compressor.compress_many([requests[i] for i in plain])):
                results[i] = result
            for i, request in enumerate(requests):
                if results[i] is None:
                    results[i] = compress_request(self.compressor, request)
        return [r for r in results if r is not None]


def plan(options: CompressOptions) -> Plan:
    """Resolve ``options`` once: the tokenizer, the method's shared instance and the deadline (from now)."""
    tokenizer = get_tokenizer(options.tokenizer)
    compressor = get_compressor(options.method_name, **options.options)
    return Plan(options, options.method_name, compressor, tokenizer, options.deadline())


def compress_texts(
    texts: Sequence[str], options: CompressOptions, questions: Sequence[str | None] | None = None
) -> list[CompressionResult]:
    """Compress each text (``questions[i]``, else the options' question, goes with ``texts[i]``), together."""
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise InvalidInputError("texts must be a list of strings")
    if questions is None:
        questions = [options.question] * len(texts)
    elif len(questions) != len(texts):
        raise InvalidInputError(f"{len(questions)} questions for {len(texts)} texts")
    for text in texts:
        check_text(text)
    for question in questions:
        if question is not None and not isinstance(question, str):
            raise InvalidInputError("question must be a string")
        check_unicode("question", question or "")
    p = plan(options)
    prepared = [_prepare(p, text, question) for text, question in zip(texts, questions)]
    results = p.run([request for request, _, _ in prepared])
    return [_with_tail(r, len(req.text), tail, n, options) for r, (req, tail, n) in zip(results, prepared)]


def compress_text(text: str, options: CompressOptions) -> CompressionResult:
    """`compress_texts` of one text."""
    return compress_texts([text], options)[0]


def _prepare(p: Plan, text: str, question: str | None) -> tuple[CompressionRequest, str, int]:
    """The request for ``text``; with ``split_question``, for its context only: (request, tail, tail tokens)."""
    question = question.strip() or None if question else None
    split = split_trailing_question(text, p.options.question_markers) if p.options.split_question else None
    if split is None:
        return p.request(text, question=question), "", 0
    tail_tokens = p.tokenizer.count(split.tail)
    budget, target = None, p.options.target_tokens
    if target is not None:
        if target - tail_tokens < 1:
            raise BudgetError(
                f"the question at the end of the prompt alone needs {tail_tokens} tokens; budget {target}"
            )
        budget = Budget(target_tokens=target - tail_tokens)
    return p.request(split.context, question=question or split.question, budget=budget), split.tail, tail_tokens


def _with_tail(
    result: CompressionResult, at: int, tail: str, tail_tokens: int, options: CompressOptions
) -> CompressionResult:
    """Glue the verbatim question tail (which starts at character ``at`` of the input) back after the context."""
    if not tail:
        return result
    result.segments.append(SegmentDecision(tail, at, at + len(tail), None, True, True))
    result.text += tail
    result.original_tokens += tail_tokens
    result.compressed_tokens += tail_tokens
    result.budget = options.budget.describe()
    result.details = {**result.details, "question_split": {"tail_tokens": tail_tokens}}
    return result
