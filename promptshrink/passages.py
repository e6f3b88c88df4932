"""Retrieved passages as a first-class input, and the hook a passage-aware compressor implements."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .methods.base import CompressionRequest
    from .result import CompressionResult, SegmentDecision

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")


@dataclass(frozen=True)
class Passage:
    """One passage: ``request.text[start:end] == text``; id and metadata travel through unchanged."""

    id: str
    text: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class PassageAwareCompressor(Protocol):
    """A compressor that wants the passages themselves, not just their concatenation.

    ``request.text`` is the joined passages; the result's segments use offsets into it, like `compress`.
    """

    def compress_passages(
        self, question: str | None, passages: list[Passage], request: CompressionRequest
    ) -> CompressionResult: ...


def paragraphs(text: str) -> list[Passage]:
    """The blank-line-separated paragraphs of ``text`` as passages with ids p0, p1, ..."""
    out, cursor = [], 0
    for m in [*_PARAGRAPH_BREAK.finditer(text), None]:
        end = m.start() if m else len(text)
        body = text[cursor:end]
        if body.strip():
            lead = len(body) - len(body.lstrip())
            start = cursor + lead
            stop = start + len(body.strip())
            out.append(Passage(f"p{len(out)}", text[start:stop], start, stop))
        cursor = m.end() if m else len(text)
    return out


def kept_per_passage(segments: Sequence[SegmentDecision], spans: Sequence[tuple[int, int]]) -> list[str]:
    """Each passage's own kept text, from the decisions on their concatenation (``spans`` are the passages' offsets
    in it, in order).

    A kept segment is cut at the passage boundaries it crosses (a text kept whole is one segment covering every
    passage), so each passage gets exactly the kept characters that lie inside it; a rewritten segment goes whole
    to the passage holding its first non-space character. Separators between passages go to none.
    """
    starts = [s for s, _ in spans]
    pieces: list[list[str]] = [[] for _ in spans]
    for seg in segments:
        if not seg.kept:
            continue
        if seg.rewritten is not None:
            anchor = seg.start + len(seg.text) - len(seg.text.lstrip())
            owner = bisect_right(starts, anchor) - 1
            if owner >= 0 and anchor < spans[owner][1]:
                pieces[owner].append(seg.rewritten)
            continue
        first = max(0, bisect_right(starts, seg.start) - 1)
        for k in range(first, len(spans)):
            lo, hi = max(seg.start, spans[k][0]), min(seg.end, spans[k][1])
            if spans[k][0] >= seg.end:
                break
            if lo < hi:
                pieces[k].append(seg.text[lo - seg.start : hi - seg.start])
    return ["".join(p).strip() for p in pieces]
