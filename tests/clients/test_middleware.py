"""RAG middleware: the LangChain compressor in a ContextualCompressionRetriever, the LlamaIndex postprocessor."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from promptshrink.clients import PromptShrinkClient
from tests.support.texts import LONG_TEXT

DOCS = [
    "Paris is the capital of France. It has many museums. The Seine flows through it.",
    "Bananas are rich in potassium. They grow in tropical climates.",
    LONG_TEXT,
]
QUERY = "What is the capital of France?"


@pytest.fixture(params=["library", "client"])
def backend(request: pytest.FixtureRequest) -> Iterator[PromptShrinkClient | None]:
    if request.param == "library":
        yield None
        return
    server = request.getfixturevalue("server")
    with PromptShrinkClient(server) as client:
        yield client


def test_langchain_contextual_compression_retriever(backend: PromptShrinkClient | None) -> None:
    from langchain_classic import retrievers
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    from promptshrink.clients.rag_langchain import PromptShrinkCompressor

    class AllDocs(BaseRetriever):
        def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
            return [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(DOCS)]

    compressor = PromptShrinkCompressor(backend=backend, method="tfidf", target_tokens=60)
    retriever = retrievers.ContextualCompressionRetriever(base_compressor=compressor, base_retriever=AllDocs())
    docs = retriever.invoke(QUERY)
    assert docs and any("capital of France" in d.page_content for d in docs)
    assert sum(len(d.page_content) for d in docs) < sum(len(t) for t in DOCS) / 3
    stats = docs[0].metadata["promptshrink"]
    assert stats["method"] == "tfidf" and stats["compressed_tokens"] <= 60 < stats["original_tokens"]
    assert {d.metadata["n"] for d in docs} <= {0, 1, 2}


def test_llamaindex_postprocessor(backend: PromptShrinkClient | None) -> None:
    from llama_index.core import schema

    from promptshrink.clients.rag_llamaindex import PromptShrinkNodePostprocessor

    nodes = [
        schema.NodeWithScore(node=schema.TextNode(text=t, id_=f"n{i}"), score=1.0 - i / 10) for i, t in enumerate(DOCS)
    ]
    post = PromptShrinkNodePostprocessor(backend=backend, method="tfidf", target_tokens=60)
    out = post.postprocess_nodes(nodes, query_str=QUERY)
    assert out and any("capital of France" in n.node.get_content() for n in out)
    assert {n.node.node_id for n in out} <= {"n0", "n1", "n2"} and nodes[2].node.get_content() == LONG_TEXT
    assert out[0].score == nodes[int(out[0].node.node_id[1:])].score
    assert out[0].node.metadata["promptshrink"]["compressed_tokens"] <= 60
