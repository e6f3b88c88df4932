"""Result types: one compression (text, counts in the target tokenizer, per-segment decisions, timing), a chat
message list, a passage list. Standard library only, so the light client shares them with the library."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class SegmentDecision:
    """Why a piece of the input was kept or dropped."""

    text: str
    start: int
    end: int
    score: float | None
    kept: bool
    forced: bool = False
    rewritten: str | None = None


@dataclass
class CompressionResult:
    text: str
    original_tokens: int
    compressed_tokens: int
    method: str
    tokenizer: str
    budget: str
    segments: list[SegmentDecision] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def merged(cls, results: list[CompressionResult]) -> CompressionResult:
        """One result for the compressed text parts of one message: counts and timings summed, texts joined by a
        blank line, segments of each part in turn (offsets into that part); ``details["parts"]`` holds each
        part's own counts and details."""
        first = results[0]
        timings: dict[str, float] = {}
        for r in results:
            for key, value in r.timings.items():
                timings[key] = timings.get(key, 0.0) + value
        parts = [
            {"original_tokens": r.original_tokens, "compressed_tokens": r.compressed_tokens, "details": r.details}
            for r in results
        ]
        return cls(
            "\n\n".join(r.text for r in results),
            sum(r.original_tokens for r in results),
            sum(r.compressed_tokens for r in results),
            first.method,
            first.tokenizer,
            first.budget,
            [s for r in results for s in r.segments],
            timings,
            {"parts": parts},
        )

    @property
    def ratio(self) -> float:
        """Kept fraction of target-tokenizer tokens (compressed / original)."""
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0

    @property
    def compression_factor(self) -> float:
        """original / compressed (e.g. 2.0 for half the tokens)."""
        return self.original_tokens / self.compressed_tokens if self.compressed_tokens else float("inf")

    @property
    def tokens_saved(self) -> int:
        return self.original_tokens - self.compressed_tokens

    def to_dict(self, include_segments: bool = True) -> dict[str, Any]:
        """Plain JSON-ready data. Built field by field: `dataclasses.asdict` deep-copies every segment, which
        costs more than compressing a 2K-token text with a model-free method."""
        data: dict[str, Any] = {}
        for f in fields(self):
            if f.name == "segments":
                if include_segments:
                    data["segments"] = [dict(vars(s)) for s in self.segments]
            else:
                data[f.name] = copy.deepcopy(getattr(self, f.name))
        data["ratio"] = round(self.ratio, 6)
        data["tokens_saved"] = self.tokens_saved
        return data


@dataclass
class MessagesResult:
    """A compressed chat message list; ``per_message[i]`` is None for messages left as they were."""

    messages: list[dict[str, Any]]
    original_tokens: int
    compressed_tokens: int
    method: str
    per_message: list[CompressionResult | None] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0


@dataclass
class PassagesResult:
    """Compressed RAG passages (ids and metadata kept) and the underlying compression of their concatenation."""

    passages: list[dict[str, Any]]
    original_tokens: int
    compressed_tokens: int
    method: str
    result: CompressionResult

    @property
    def ratio(self) -> float:
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0
