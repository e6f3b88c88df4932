"""KV-cache compression (the GPU path): presses applied after prefill, per layer and head.

``with press(model): model.generate(...)`` compresses the prompt's cache inside any generate call
(``press(model, question_len=n)``: the prompt ends with an n-token question, used as the observation window and kept);
``generate(model, tokenizer, context, question, press=..., ratio=..., question_aware=False)`` compresses only the
context, either before the question is seen (query-agnostic, default) or scored by the question (question-aware).
``ratio`` is always kept / original, counted over the context.
"""

from __future__ import annotations

from typing import Any

from .base import BasePress, ScorerPress
from .chunkkv import ChunkKVPress
from .pipeline import decode, generate, greedy, prefill, prefill_logits
from .pyramidinfer import PyramidInferPress
from .qfilters import QFiltersPress, compute_qfilters, save_qfilters
from .sagekv import SageKVPress
from .snapkv import SnapKVPress
from .streaming_llm import StreamingLLMPress
from .zeromerge import ZeroMergePress

PRESSES: dict[str, type[BasePress]] = {
    "streaming_llm": StreamingLLMPress,
    "snapkv": SnapKVPress,
    "chunkkv": ChunkKVPress,
    "qfilters": QFiltersPress,
    "sagekv": SageKVPress,
    "pyramidinfer": PyramidInferPress,
    "zeromerge": ZeroMergePress,
}


def make_press(name: str, ratio: float = 0.5, model: Any = None, **kwargs: Any) -> BasePress:
    """A press by name; ``qfilters`` loads the filters saved for ``model`` under ``models/<model>/``."""
    if name not in PRESSES:
        raise KeyError(f"unknown press {name!r}; choose from {', '.join(PRESSES)}")
    if name == "qfilters" and "filters" not in kwargs:
        from ..model_loading import model_key

        key = model_key(getattr(getattr(model, "config", None), "name_or_path", "") or "")
        return QFiltersPress.from_pretrained(key, ratio=ratio)
    return PRESSES[name](ratio=ratio, **kwargs)


__all__ = [
    "PRESSES",
    "BasePress",
    "ChunkKVPress",
    "PyramidInferPress",
    "QFiltersPress",
    "SageKVPress",
    "ScorerPress",
    "SnapKVPress",
    "StreamingLLMPress",
    "ZeroMergePress",
    "compute_qfilters",
    "decode",
    "generate",
    "greedy",
    "make_press",
    "prefill",
    "prefill_logits",
    "save_qfilters",
]
