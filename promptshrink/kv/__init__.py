"""KV-cache compression (the GPU path): presses applied after prefill, per layer and head.

``with press(model): model.generate(...)`` compresses the prompt's cache inside any generate call
(``press(model, question_len=n)``: the prompt ends with an n-token question, used as the observation window and kept);
``generate(model, tokenizer, context, question, press=..., ratio=..., question_aware=False)`` compresses only the
context, either before the question is seen (query-agnostic, default) or scored by the question (question-aware).
``ratio`` is always kept / original, counted over the context. Presses register themselves by name
(``@register_press``, one module each): ``press_names()``, ``make_press(name, ratio=...)``, ``describe_presses()``.
"""

from __future__ import annotations

from .base import BasePress, ScorerPress
from .chunkkv import ChunkKVPress
from .cskv import CSKVPress
from .decoding import DecodingPress
from .freqkv import FreqKVPress
from .headwise import HeadwisePress
from .pipeline import decode, generate, greedy, prefill, prefill_logits
from .pod import PoDPress, find_layer_groups, layer_similarity
from .pyramidinfer import PyramidInferPress
from .qfilters import QFiltersPress, compute_qfilters, save_qfilters
from .reform import ReformPress
from .registry import describe_presses, get_press, make_press, press_names, register_press
from .retro import RetroAttentionPress
from .sagekv import SageKVPress
from .snapkv import SnapKVPress
from .streaming_llm import StreamingLLMPress
from .zeromerge import ZeroMergePress

__all__ = [
    "BasePress",
    "CSKVPress",
    "ChunkKVPress",
    "DecodingPress",
    "FreqKVPress",
    "HeadwisePress",
    "PoDPress",
    "PyramidInferPress",
    "QFiltersPress",
    "ReformPress",
    "RetroAttentionPress",
    "SageKVPress",
    "ScorerPress",
    "SnapKVPress",
    "StreamingLLMPress",
    "ZeroMergePress",
    "compute_qfilters",
    "decode",
    "describe_presses",
    "find_layer_groups",
    "generate",
    "get_press",
    "greedy",
    "layer_similarity",
    "make_press",
    "prefill",
    "prefill_logits",
    "press_names",
    "register_press",
    "save_qfilters",
]
