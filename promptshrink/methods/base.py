"""The one compressor interface and the shared extractive pipeline (segment -> score -> budget -> select)."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..budget import Budget
from ..errors import CompressionTimeoutError
from ..params import one_of
from ..result import CompressionResult, SegmentDecision
from ..segmentation import LEVELS, Unit, protected_spans, segment
from ..selection import render, select_to_budget
from ..target_tokenizer import TargetTokenizer

ProgressFn = Callable[[int, int], None]


@dataclass
class CompressionRequest:
    """Everything a compressor needs for one call (validated by `promptshrink.compress`)."""

    text: str
    budget: Budget
    tokenizer: TargetTokenizer
    question: str | None = None
    keep: tuple[str, ...] = ()
    protect_numbers: bool = False
    seed: int = 0
    progress: ProgressFn | None = None
    deadline: float | None = None  # time.monotonic() value; past it, `report` raises CompressionTimeoutError

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
    """Base class. Extractive methods implement `score_units`; others override `compress`.

    A method is a ``@register``-ed ``@dataclass`` subclass: its parameters are fields with defaults, checked in
    ``__post_init__`` (call ``super().__post_init__()``) with the validators of `promptshrink.params`, and each is
    described in the ``Args:`` section of the class docstring.

    Args:
        unit: What is kept or dropped: one of ``segmentation.LEVELS``; empty = the method's ``default_unit``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    extractive: ClassVar[bool] = True
    uses_question: ClassVar[bool] = False
    default_unit: ClassVar[str] = "sentence"
    requires_lm: ClassVar[bool] = True  # needs torch + transformers (the ``lm`` extra)

    unit: str | None = None

    def __post_init__(self) -> None:
        self.unit = one_of("unit", self.unit or self.default_unit, LEVELS)

    def units(self, request: CompressionRequest) -> list[Unit]:
        spans = protected_spans(request.text, request.keep, protect_numbers=request.protect_numbers)
        return segment(request.text, self.unit, spans)

    @abstractmethod
    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        """Higher score = more worth keeping; one score per unit."""

    def compress(self, request: CompressionRequest) -> CompressionResult:
        start = time.perf_counter()
        original = request.tokenizer.count(request.text)
        limit = request.budget.limit(original)
        if request.budget.keeps_everything(original):
            return self.unchanged(request, original, start)
        units = self.units(request)
        request.check_deadline()
        scored_at = time.perf_counter()
        scores = np.asarray(self.score_units(request, units), dtype=float)
        request.check_deadline()
        selected_at = time.perf_counter()
        keep = select_to_budget(units, scores, limit, request.tokenizer)
        return self.build_result(request, original, units, scores, keep, start, scored_at, selected_at)

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
    ) -> CompressionResult:
        text = render(units, keep)
        end = time.perf_counter()
        segments = [
            SegmentDecision(u.text, u.start, u.end, None if not np.isfinite(s) else float(s), bool(k), u.forced)
            for u, s, k in zip(units, scores, keep)
        ]
        return CompressionResult(
            text=text,
            original_tokens=original,
            compressed_tokens=request.tokenizer.count(text),
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
