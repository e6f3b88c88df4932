"""LlamaIndex node postprocessor; needs ``promptshrink[llamaindex]`` (llama-index-core)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from .rag import compress_texts, summary


class PromptShrinkNodePostprocessor(BaseNodePostprocessor):
    """Compress retrieved nodes for the query under one token budget; fully dropped nodes go.

    ``backend`` is None for the in-process library, or a `PromptShrinkClient` for a remote service.
    """

    backend: Any = Field(default=None, exclude=True)
    method: str = "tfidf"
    rate: float | None = None
    target_tokens: int | None = None
    tokenizer: str = "cl100k_base"
    keep: list[str] = Field(default_factory=list)
    drop_empty: bool = True

    @classmethod
    def class_name(cls) -> str:
        return "PromptShrinkNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        if not nodes:
            return []
        texts: Sequence[str] = [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]
        settings: dict[str, Any] = {
            "rate": self.rate,
            "target_tokens": self.target_tokens,
            "tokenizer": self.tokenizer,
            "keep": tuple(self.keep),
        }
        question = query_bundle.query_str if query_bundle else None
        result = compress_texts(self.backend, texts, question, self.method, settings)
        stats = summary(result)
        out = []
        for item, passage in zip(nodes, result.passages):
            if self.drop_empty and not passage["kept"]:
                continue
            node = item.node.model_copy(deep=True)
            node.set_content(passage["text"])
            node.metadata["promptshrink"] = stats
            out.append(NodeWithScore(node=node, score=item.score))
        return out
