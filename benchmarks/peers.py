"""Peers on the same inputs, budgets and bundled LM: llmlingua (LLMLingua, LongLLMLingua, -2), selective-context.

Peers are optional: a peer that cannot run here says why (`unavailable`) and the runner skips it.
"""

from __future__ import annotations

import importlib.util
import os
import time
from functools import lru_cache
from typing import Any

from .data import Item
from .systems import BudgetSpec, Output, measured

LLMLINGUA_INSTALL = "pip install --no-deps llmlingua==0.2.2 (other deps: accelerate nltk tiktoken torch transformers)"
LLMLINGUA2_ENV = "PROMPTSHRINK_LLMLINGUA2_MODEL"
LONG_OPTIONS = {
    "condition_in_question": "after_condition",
    "reorder_context": "sort",
    "dynamic_context_compression_ratio": 0.3,
    "condition_compare": True,
    "context_budget": "+100",
    "rank_method": "longllmlingua",
}


class _LegacyCacheModel:
    """llmlingua 0.2.2 slices ``past_key_values`` as tuples; transformers >= 5 returns `Cache` objects."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        from transformers import DynamicCache

        if isinstance(past_key_values, (list, tuple)):
            past_key_values = DynamicCache(ddp_cache_data=list(past_key_values), config=self._model.config)
        out = self._model(*args, past_key_values=past_key_values, **kwargs)
        if isinstance(out.past_key_values, DynamicCache):
            out.past_key_values = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
        return out


def _bundled_tiktoken() -> None:
    """llmlingua counts tokens with tiktoken's gpt-3.5 encoding, which it would download: use the bundled one."""
    import tiktoken.registry

    from promptshrink.target_tokenizer import get_tokenizer

    tiktoken.registry.ENCODINGS.setdefault("cl100k_base", get_tokenizer("cl100k_base").encoding)  # type: ignore[attr-defined]


@lru_cache(maxsize=1)
def _llmlingua_compressor() -> Any:
    """One llmlingua `PromptCompressor` on promptshrink's bundled default LM, same device and dtype as the methods
    (``$PROMPTSHRINK_DEVICE``: CPU unless a GPU is asked for; ``$PROMPTSHRINK_PEER_DEVICE`` overrides it)."""
    from llmlingua import PromptCompressor

    from promptshrink.model_loading import default_dtype, resolve, resolve_device

    _bundled_tiktoken()
    device = resolve_device(
        os.environ.get("PROMPTSHRINK_PEER_DEVICE") or os.environ.get("PROMPTSHRINK_DEVICE") or "cpu"
    )
    compressor = PromptCompressor(
        model_name=resolve("default-lm")[0], device_map=device, model_config={"torch_dtype": default_dtype(device)}
    )
    compressor.model = _LegacyCacheModel(compressor.model)
    return compressor


class LLMLinguaPeer:
    """LLMLingua (question-agnostic) or LongLLMLingua (question-aware coarse-to-fine) from the llmlingua package."""

    kind = "peer"

    def __init__(self, long: bool) -> None:
        self.long = long
        self.name = "peer:longllmlingua" if long else "peer:llmlingua"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("llmlingua") is None:
            return f"llmlingua not installed: {LLMLINGUA_INSTALL}"
        return None

    def compress(self, item: Item, budget: BudgetSpec) -> Output:
        compressor = _llmlingua_compressor()
        kwargs = budget.kwargs(item.task)
        limit = {"rate": kwargs["rate"]} if "rate" in kwargs else {"target_token": kwargs["target_tokens"]}
        contexts = item.documents or [item.context]
        start = time.perf_counter()
        if self.long:
            out = compressor.compress_prompt(contexts, question=item.question, **limit, **LONG_OPTIONS)
        else:
            out = compressor.compress_prompt(contexts, **limit)
        text = out["compressed_prompt"]
        if self.long and text.endswith(item.question):  # llmlingua appends the (uncompressed) question
            text = text[: -len(item.question)].rstrip()
        return measured(item, text, start)


class SelectiveContextPeer:
    """The reference `selective-context` package (GPT-2 from the hub, spaCy en_core_web_sm phrases)."""

    kind = "peer"
    name = "peer:selective-context"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("selective_context") is None:
            return (
                "selective-context==0.1.4 not installed; it pins spacy==3.2.0, needs en_core_web_sm (not on PyPI) "
                "and loads GPT-2 from the Hugging Face hub (it cannot take another LM): cannot run offline"
            )
        if importlib.util.find_spec("en_core_web_sm") is None:
            return "selective-context needs the spaCy model en_core_web_sm, which is not on PyPI"
        return None

    def compress(self, item: Item, budget: BudgetSpec) -> Output:
        from selective_context import SelectiveContext

        from .systems import count

        kwargs = budget.kwargs(item.task)
        rate = kwargs.get("rate") or min(1.0, kwargs["target_tokens"] / count(item.context))
        start = time.perf_counter()
        text, _ = _selective_context(SelectiveContext)(item.context, reduce_ratio=1 - rate)
        return measured(item, text, start)


@lru_cache(maxsize=1)
def _selective_context(cls: Any) -> Any:
    return cls(model_type="gpt2", lang="en")


class LLMLingua2Peer:
    """LLMLingua-2 (token classifier): runs only when ``$PROMPTSHRINK_LLMLINGUA2_MODEL`` names a local model dir."""

    kind = "peer"
    name = "peer:llmlingua-2"

    def unavailable(self) -> str | None:
        if importlib.util.find_spec("llmlingua") is None:
            return f"llmlingua not installed: {LLMLINGUA_INSTALL}"
        if not os.path.isdir(os.environ.get(LLMLINGUA2_ENV, "")):
            return (
                "needs the microsoft/llmlingua-2-* classifier weights, which only the Hugging Face hub has "
                f"(no package ships them); set {LLMLINGUA2_ENV} to a local copy"
            )
        return None

    def compress(self, item: Item, budget: BudgetSpec) -> Output:
        compressor = _llmlingua2_compressor(os.environ[LLMLINGUA2_ENV])
        kwargs = budget.kwargs(item.task)
        limit = {"rate": kwargs["rate"]} if "rate" in kwargs else {"target_token": kwargs["target_tokens"]}
        start = time.perf_counter()
        text = compressor.compress_prompt(item.documents or [item.context], **limit)["compressed_prompt"]
        return measured(item, text, start)


@lru_cache(maxsize=1)
def _llmlingua2_compressor(path: str) -> Any:
    from llmlingua import PromptCompressor

    _bundled_tiktoken()
    return PromptCompressor(model_name=path, device_map="cpu", use_llmlingua2=True)


def peer_systems() -> list[LLMLinguaPeer | LLMLingua2Peer | SelectiveContextPeer]:
    return [LLMLinguaPeer(long=False), LLMLinguaPeer(long=True), LLMLingua2Peer(), SelectiveContextPeer()]
