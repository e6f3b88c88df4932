"""The compressor interface (`Compressor`) and the shared extractive pipeline (`ExtractiveCompressor`)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..budget import Budget
from ..errors import CompressionTimeoutError
from ..params import one_of
from ..request import CompressOptions, ProgressFn
from ..result import CompressionResult, SegmentDecision
from ..segmentation import LEVELS, Unit, protected_spans, segment
from ..selection import render, select_or_cut
from ..target_tokenizer import TargetTokenizer


@dataclass
class CompressionRequest:
    """Everything a compressor needs for one call (built by `promptshrink.pipeline` from validated options)."""

    text: str
    budget: Budget
    tokenizer: TargetTokenizer
    question: str | None = None
    keep: tuple[str, ...] = ()
    protect_numbers: bool = False
    seed: int = 0
    progress: ProgressFn | None = None
    deadline: float | None = None  # time.monotonic() value; past it, `report` raises CompressionTimeoutError
    options: CompressOptions | None = None  # the call's options (every field, also those added later)

    def report(self, done: int, total: int) -> None:
        """Progress between windows/stages: calls ``progress`` and stops the work once the deadline has passed."""
        if self.progress is not None:
            self.progress(done, total)
        self.check_deadline(f"after {done} of {total} steps")

    def check_deadline(self, where: str = "between stages") -> None:
        """Raise `CompressionTimeoutError` once the deadline has passed (so a timed-out job frees its thread)."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise CompressionTimeoutError(
                f"compression stopped {where}: its time limit ran out; "
                "give it more time (timeout_s), a smaller input or a faster method"
            )


@dataclass
class Compressor(ABC):
    """Base class of every method: `compress` one request (`compress_many` several).

    A method is a ``@register``-ed ``@dataclass`` subclass: its parameters are fields with defaults, checked in
    ``__post_init__`` (call ``super().__post_init__()``) with the validators of `promptshrink.params`, and each is
    described in the ``Args:`` section of the class docstring. What it can do is declared in class attributes
    (below), never inferred from which methods it overrides. Methods that keep or drop units of the input derive
    from `ExtractiveCompressor` and implement only `score_units`.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    extractive: ClassVar[bool] = True  # the output is a selection of the input's units (no rewriting)
    uses_question: ClassVar[bool] = False
    requires_lm: ClassVar[bool] = True  # needs torch + transformers (the ``lm`` extra)
    linear_time: ClassVar[bool] = False  # model-free and linear in the input: the service runs short inputs inline
    budget_is_ceiling: ClassVar[bool] = False  # rate/target_tokens is an upper bound: it may keep much less
    batches: ClassVar[bool] = False  # `compress_many` runs the model passes of many requests together

    def __post_init__(self) -> None:
        return

    @abstractmethod
    def compress(self, request: CompressionRequest) -> CompressionResult:
        """The compression of one validated request."""

    def compress_many(self, requests: Sequence[CompressionRequest]) -> list[CompressionResult]:
        """`compress` of each request (methods that declare ``batches`` run their passes together)."""
        return [self.compress(r) for r in requests]

    def unchanged(self, request: CompressionRequest, original: int, start: float) -> CompressionResult:
        """The budget allows the whole input: return it as is."""
        seg = SegmentDecision(request.text, 0, len(request.text), None, True)
        return CompressionResult(
            request.text,
            original,
            original,
            self.name,
            request.tokenizer.name,
            request.budget.describe(),
            [seg],
            {"total_s": time.perf_counter() - start},
        )


@dataclass
class ExtractiveCompressor(Compressor):
    """The shared extractive pipeline (segment -> score -> budget -> select): a subclass implements `score_units`.

    Args:
        unit: What is kept or dropped: one of ``segmentation.LEVELS``; empty = the method's ``default_unit``.
    """

    default_unit: ClassVar[str] = "sentence"

    unit: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        self.unit = one_of("unit", self.unit or self.default_unit, LEVELS)

    def units(self, request: CompressionRequest) -> list[Unit]:
        spans = protected_spans(request.text, request.keep, protect_numbers=request.protect_numbers)
        return segment(request.text, self.unit, spans)

    @abstractmethod
    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        """Higher score = more worth keeping; one score per unit."""

    def score_many(self, requests: Sequence[CompressionRequest], units: Sequence[Sequence[Unit]]) -> list[np.ndarray]:
        """`score_units` of several requests; LM-scored methods override it to run their passes together."""
        return [self.score_units(r, u) for r, u in zip(requests, units)]

    def prefetch(self, requests: Sequence[CompressionRequest]) -> None:
        """Start scoring work that needs only the requests (e.g. queue GPU passes) before segmentation, so the two
        overlap; the scoring methods pick it up. Default: nothing."""
        return

    def compress_many(self, requests: Sequence[CompressionRequest]) -> list[CompressionResult]:
        """`compress` of each request, with one `score_many` call for all of them (results equal one by one).

        Methods that replace `compress` itself are run one request at a time. Timings are the batch's.
        """
        if type(self).compress is not ExtractiveCompressor.compress:  # a method that wraps the pipeline
            return [self.compress(r) for r in requests]
        start = time.perf_counter()
        out: list[CompressionResult | None] = [None] * len(requests)
        todo = []
        self.prefetch(requests)
        for i, request in enumerate(requests):
            units = self.units(request)
            original, costs = request.tokenizer.count_spans(request.text, [u.start for u in units])
            if request.budget.keeps_everything(original):
                out[i] = self.unchanged(request, original, start)
            else:
                todo.append((i, units, original, costs))
        scored_at = time.perf_counter()
        all_scores = self.score_many([requests[i] for i, *_ in todo], [u for _, u, *_ in todo])
        selected_at = time.perf_counter()
        for (i, units, original, costs), scores in zip(todo, all_scores):
            request, scores = requests[i], np.asarray(scores, dtype=float)
            limit = request.budget.limit(original)
            units, scores, keep, kept_tokens = select_or_cut(units, scores, limit, request.tokenizer, costs)
            timing = (start, scored_at, selected_at)
            out[i] = self.build_result(request, original, units, scores, keep, *timing, kept_tokens)
        return [r for r in out if r is not None]

    def compress(self, request: CompressionRequest) -> CompressionResult:
        start = time.perf_counter()
        self.prefetch([request])
        units = self.units(request)
        # one encode gives the original count and each unit's in-context cost
        original, costs = request.tokenizer.count_spans(request.text, [u.start for u in units])
        limit = request.budget.limit(original)
        if request.budget.keeps_everything(original):
            return self.unchanged(request, original, start)
        request.check_deadline()
        scored_at = time.perf_counter()
        scores = np.asarray(self.score_units(request, units), dtype=float)
        request.check_deadline()
        selected_at = time.perf_counter()
        units, scores, keep, kept_tokens = select_or_cut(units, scores, limit, request.tokenizer, costs)
        return self.build_result(request, original, units, scores, keep, start, scored_at, selected_at, kept_tokens)

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
        """The result of an extractive selection; ``kept_tokens`` is the output's count when already known."""
        text = render(units, keep)
        end = time.perf_counter()
        finite = np.isfinite(scores)
        segments = [
            SegmentDecision(u.text, u.start, u.end, s if f else None, k, u.forced)
            for u, s, f, k in zip(units, scores.tolist(), finite.tolist(), keep)
        ]
        return CompressionResult(
            text=text,
            original_tokens=original,
            compressed_tokens=request.tokenizer.count(text) if kept_tokens is None else kept_tokens,
            method=self.name,
            tokenizer=request.tokenizer.name,
            budget=request.budget.describe(),
            segments=segments,
            timings={
                "segment_s": scored_at - start,
                "score_s": selected_at - scored_at,
                "select_s": end - selected_at,
                "total_s": end - start,
            },
        )
