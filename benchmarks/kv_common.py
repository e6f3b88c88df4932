"""Shared helpers for the KV benchmarks: capture prefill state once, apply presses offline, time decode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from promptshrink import kv
from promptshrink.kv.pipeline import new_cache

METHODS = ["streaming_llm", "snapkv", "chunkkv", "qfilters", "sagekv", "pyramidinfer", "zeromerge"]
# presses of round 2: applied offline like the above (decoding: its prefill step; its decode-time steps are not timed)
ROUND2 = ["pod", "freqkv", "decoding"]
# presses whose cache is a layer of their own (routed attention) or rebuilt after prefill: timed inside kv.prefill
HOOKED = ["headwise", "retro", "reform"]


@dataclass
class Capture(kv.BasePress):
    """A press that keeps everything and records each layer's window queries and attention scaling."""

    queries: list[torch.Tensor] = field(default_factory=list)
    scaling: float = 1.0

    def compress(self, layer, n_layers, keys, values, queries, scaling):  # noqa: ANN001, ANN201
        self.queries.append(queries)
        self.scaling = scaling
        return keys, values


def capture_prefill(model: Any, ids: torch.Tensor, window: int = 32) -> tuple[Any, Capture]:
    cap = Capture(ratio=1.0, window=window)
    return kv.prefill(model, ids, cap), cap


def apply(
    press: kv.BasePress, cache: Any, cap: Capture, question_len: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Compress every layer of a full cache (left untouched) with ``press``, as the prefill hook would.

    ``question_len`` > 0: question-aware, the captured window must be the question (``window=question_len``); only the
    context before it is compressed and the question's entries are appended whole.
    """
    press.reset()
    press.question = question_len
    n, out = len(cache.layers), []
    for i, layer in enumerate(cache.layers):
        ctx = layer.keys.shape[-2] - question_len
        k, v = press.compress(i, n, layer.keys[:, :, :ctx], layer.values[:, :, :ctx], cap.queries[i], cap.scaling)
        out.append((torch.cat([k, layer.keys[:, :, ctx:]], 2), torch.cat([v, layer.values[:, :, ctx:]], 2)))
    press.question = 0
    return out


def build_cache(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    cache = new_cache()
    for i, (k, v) in enumerate(layers):
        cache.update(k.contiguous(), v.contiguous(), i)
    return cache


def kv_bytes(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
    return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)


def make_press(name: str, ratio: float, filters: torch.Tensor | None, model: Any = None) -> kv.BasePress:
    """A press for the benchmark model (``model``: for presses that read it, e.g. FreqKV's rotary embedding)."""
    if name == "qfilters":
        return kv.make_press(name, ratio=ratio, filters=filters)
    return kv.make_press(name, ratio=ratio, model=model)
