"""Selective Context (Li et al., EMNLP 2023): drop the units that carry the least self-information."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..model_loading import DEFAULT_LM, resolve_device
from ..params import integer, non_empty, number, one_of
from ..registry import register
from ..scoring.lm import PendingScores, TokenScores, start_surprisal, to_units
from ..segmentation import Unit
from .base import CompressionRequest, ExtractiveCompressor

_PREFETCHED = threading.local()  # this thread's queued passes: (key, {(text, prefix): index}, PendingScores)


@register
@dataclass
class SelectiveContextCompressor(ExtractiveCompressor):
    """Score each LM token by I(x_t) = -log2 P(x_t | x_<t), sum per unit, keep the most informative units.

    The paper keeps units above the p-th percentile of unit scores; here that threshold is taken over token
    mass so the budget holds in the target tokenizer. With a question, the score adds how much the question
    lowers each token's surprisal (question_weight * max(0, I(x) - I(x | q))), so answer-bearing units rise.
    Reference: Li et al., "Compressing Context to Enhance Inference Efficiency of Large Language Models", EMNLP 2023.

    Args:
        model: Causal LM that scores surprisal (a bundled alias such as ``default-lm``, or a model name).
        aggregate: How token scores combine into a unit score: ``sum`` or ``mean``.
        question_weight: Weight of the question-conditioned surprisal drop (0 ignores the question).
        overlap: LM tokens of left context re-read at the start of each window of long text.
    """

    name = "selective_context"
    batches = True  # `score_many` packs the windows of many requests into shared LM batches
    summary = "Self-information of a causal LM, aggregated to tokens/phrases/sentences; low-information units go."
    uses_question = True
    default_unit = "phrase"

    model: str = DEFAULT_LM
    aggregate: str = "sum"
    question_weight: float = 1.0
    overlap: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        non_empty("model", self.model)
        one_of("aggregate", self.aggregate, ("sum", "mean"))
        number("question_weight", self.question_weight, 0.0)
        integer("overlap", self.overlap, 0)

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return self.score_many([request], [units])[0]

    def score_many(self, requests: Sequence[CompressionRequest], units: Sequence[Sequence[Unit]]) -> list[np.ndarray]:
        """The plain and the question-conditioned passes of every request go through the LM together."""
        asks = [i for i, r in enumerate(requests) if r.question and self.question_weight]

        def progress(done: int, total: int) -> None:  # progress callbacks and deadlines of every request
            for request in requests:
                request.report(done, total)

        scored = self._surprisal(*self._passes(requests), progress)
        out = [to_units(info, u, self.aggregate) for info, u in zip(scored, units)]
        for k, i in enumerate(asks):
            info, given_q = scored[i], scored[len(requests) + k]
            gain = TokenScores(info.offsets, np.clip(info.values - given_q.values, 0.0, None))
            out[i] = out[i] + self.question_weight * to_units(gain, units[i], self.aggregate)
        return out

    def prefetch(self, requests: Sequence[CompressionRequest]) -> None:
        """On CUDA, queue the LM passes before segmentation so the GPU runs them meanwhile (on CPU they are the
        work itself: nothing to overlap, and an input that fits its budget needs none)."""
        if not resolve_device().startswith("cuda"):
            return
        texts, prefixes = self._passes(requests)
        pending = start_surprisal(texts, self.model, prefixes, overlap=self.overlap)
        _PREFETCHED.value = (self._key(), {pair: i for i, pair in enumerate(zip(texts, prefixes))}, pending)

    def _passes(self, requests: Sequence[CompressionRequest]) -> tuple[list[str], list[str | None]]:
        """(texts, prefixes) of the LM passes: one plain pass per request, then one per question-aware request."""
        asks = [i for i, r in enumerate(requests) if r.question and self.question_weight]
        texts = [r.text for r in requests] + [requests[i].text for i in asks]
        prefixes: list[str | None] = [None] * len(requests)
        return texts, prefixes + [f"Question: {requests[i].question}\n" for i in asks]

    def _key(self) -> tuple[str, int, str]:
        return self.model, self.overlap, resolve_device()

    def _surprisal(
        self, texts: list[str], prefixes: list[str | None], progress: Callable[[int, int], None]
    ) -> list[TokenScores]:
        """The passes' scores: from this thread's prefetched passes when they cover them, else run now."""
        key, where, pending = getattr(_PREFETCHED, "value", None) or (None, {}, None)
        _PREFETCHED.value = None
        pairs = list(zip(texts, prefixes))
        if not isinstance(pending, PendingScores) or key != self._key() or any(p not in where for p in pairs):
            return start_surprisal(texts, self.model, prefixes, overlap=self.overlap).collect(progress)
        scored = pending.collect(progress)
        return [scored[where[p]] for p in pairs]
