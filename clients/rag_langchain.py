"""LangChain document compressor (for `ContextualCompressionRetriever`); needs ``promptshrink[langchain]``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import Callbacks
from langchain_core.documents import BaseDocumentCompressor, Document
from pydantic import ConfigDict

from .rag import PassageBackend, compress_texts, summary


class PromptShrinkCompressor(BaseDocumentCompressor):
    """Compress retrieved documents for the query under one token budget; fully dropped documents go.

    ``backend`` is None for the in-process library, or a `PromptShrinkClient` for a remote service.
    Each kept document's metadata gains ``promptshrink`` (method and token counts of the whole call).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)
    backend: Any = None
    method: str = "tfidf"
    rate: float | None = None
    target_tokens: int | None = None
    tokenizer: str = "cl100k_base"
    keep: Sequence[str] = ()
    drop_empty: bool = True

    def compress_documents(
        self, documents: Sequence[Document], query: str, callbacks: Callbacks | None = None
    ) -> Sequence[Document]:
        if not documents:
            return []
        settings = {
            "rate": self.rate,
            "target_tokens": self.target_tokens,
            "tokenizer": self.tokenizer,
            "keep": tuple(self.keep),
        }
        backend: PassageBackend | None = self.backend
        result = compress_texts(backend, [d.page_content for d in documents], query or None, self.method, settings)
        stats = summary(result)
        out = []
        for doc, passage in zip(documents, result.passages):
            if self.drop_empty and not passage["kept"]:
                continue
            metadata = {**doc.metadata, "promptshrink": stats}
            out.append(Document(page_content=passage["text"], metadata=metadata, id=doc.id))
        return out
