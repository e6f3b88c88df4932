"""Backend shared by the RAG integrations: the library in-process, or a `PromptShrinkClient`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import promptshrink
from promptshrink.result import PassagesResult


class PassageBackend(Protocol):
    """Anything with the library's `compress_passages` signature (the library module or a client)."""

    def compress_passages(
        self, passages: Sequence[dict[str, Any] | str], question: str | None = None, method: str = ..., **kwargs: Any
    ) -> PassagesResult: ...


def compress_texts(
    backend: PassageBackend | None,
    texts: Sequence[str],
    question: str | None,
    method: str,
    settings: dict[str, Any],
) -> PassagesResult:
    """Compress ``texts`` together under one budget; passage ids are their positions."""
    passages = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    return (backend or promptshrink).compress_passages(passages, question, method, **settings)


def summary(result: PassagesResult) -> dict[str, Any]:
    return {
        "method": result.method,
        "original_tokens": result.original_tokens,
        "compressed_tokens": result.compressed_tokens,
    }
