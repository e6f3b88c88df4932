"""Retrieved passages as a first-class input, and the hook a passage-aware compressor implements."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .methods.base import CompressionRequest
    from .result import CompressionResult

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
