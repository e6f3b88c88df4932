"""Decoding-time compression: every ``interval`` generated tokens, bring the cache back to its target size.

Long outputs (reasoning traces) grow the cache after prefill; this wrapper keeps it bounded. The prompt's cache is
compressed by the wrapped scorer press as usual; while decoding, the last ``window`` queries of each layer are
kept, and when a layer holds ``target + interval`` entries the wrapped press keeps its best ``target`` of them,
scored with those queries (the most recent ``protect`` entries of the wrapped press always stay).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..params import integer
from .base import hook_cache, hook_hidden, is_first_prefill
from .observation import window_queries
from .registry import register_press
from .wrapper import ScorerWrapper


@register_press
@dataclass
class DecodingPress(ScorerWrapper):
    """Compress with a scorer press after prefill and again every ``interval`` generated tokens.

    Works inside ``with press(model): model.generate(...)`` and in ``kv.generate``/``kv.decode(..., press=p)``,
    which keep the press's hooks on while decoding. The cache of a layer oscillates between ``target`` and
    ``target + interval`` entries however long the output is.
    Reference: decoding-time compression as in kvpress's DecodingPress (NVIDIA, 2025) for long reasoning outputs;
    the scorer is the wrapped press's paper.

    Args:
        interval: Generated tokens between two compressions during decoding.
        target: Entries per layer the cache is brought back to; 0 = what the prefill compression kept per layer.
    """

    name = "decoding"
    summary = "A scorer press applied after prefill and again every N generated tokens (bounded cache)."
    decoding = True

    interval: int = 64
    target: int = 0
    _targets: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _recent: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("interval", self.interval)
        integer("target", self.target, 0)

    def reset(self) -> None:
        self._targets, self._recent = {}, {}
        super().reset()

    def compress(
        self,
        layer: int,
        n_layers: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self.inner.question = self.question
        return self.inner.compress(layer, n_layers, keys, values, queries, scaling)

    def _hook(self, layer: int, n_layers: int) -> Any:
        at_prefill = super()._hook(layer, n_layers)

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            hidden = hook_hidden(args, kwargs)
            cache = hook_cache(kwargs)
            if cache is None:
                return output
            if is_first_prefill(cache.layers[layer], hidden.shape[1]):
                output = at_prefill(module, args, kwargs, output)
                self._targets[layer] = self.target or cache.layers[layer].keys.shape[-2]
                self._recent.pop(layer, None)
                return output
            self._decode_step(layer, module, hidden, kwargs, cache.layers[layer])
            return output

        return hook

    def _decode_step(self, layer: int, module: nn.Module, hidden: torch.Tensor, kwargs: dict, cache_layer: Any) -> None:
        """Remember this forward's last queries; compress the layer once it holds ``target + interval`` entries.

        The remembered queries are those of the tokens appended since the last compression, so they are the last
        entries of the cache (the wrapped press's causal window)."""
        if self.needs_queries:
            q = window_queries(module, hidden, kwargs["position_embeddings"], min(self.window, hidden.shape[1]))
            before = self._recent.get(layer)
            self._recent[layer] = (q if before is None else torch.cat([before, q], dim=2))[:, :, -self.window :]
        target = self._targets.setdefault(layer, self.target or cache_layer.keys.shape[-2] - hidden.shape[1])
        if cache_layer.keys.shape[-2] < target + self.interval:
            return
        if layer == 0:
            self.inner.reset()
        self.inner.question = 0
        k, v = self.inner.select(
            layer, cache_layer.keys, cache_layer.values, self._recent.pop(layer, None), module.scaling, target
        )
        cache_layer.keys, cache_layer.values = k.contiguous(), v.contiguous()
