"""Attention over cache layers that plain attention cannot read (a head-wise pool, a paged sparse store).

Such a layer subclasses :class:`RoutedLayer`: its ``update`` marks the key tensor it returns, and every attention
implementation registered with transformers (SDPA, flash, flex) is wrapped once, at import, so that a call on a
marked key tensor goes to the layer's :meth:`RoutedLayer.attend` instead; every other call is passed through
unchanged. Models must use one of those implementations, not ``eager`` (transformers calls eager directly).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer
from transformers.modeling_utils import AttentionInterface

from ..errors import InvalidInputError, PromptShrinkError

_PENDING = threading.local()  # (key tensor, layer) of the routed layer whose update() the next attention call reads


class RoutedLayer(DynamicLayer):
    """A cache layer whose attention is computed by :meth:`attend`."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        self.keys, self.values = keys, values

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if getattr(_PENDING, "layout", None) is not None:
            _PENDING.layout = None
            raise PromptShrinkError(
                "attention over a head-wise or RetroAttention cache layer bypassed promptshrink's routing (eager "
                "attention, or an implementation registered after promptshrink.kv was imported): use SDPA or flash"
            )
        keys, values = self.append(key_states, value_states)
        _PENDING.layout = (keys, self)
        return keys, values

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new entries; return the (keys, values) handed to the attention call."""
        return super().update(key_states, value_states)

    def attend(
        self, module: nn.Module, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        """Attention output [batch, q, heads, dim] of ``query`` [batch, heads, q, dim]."""
        raise NotImplementedError


def _route(original: Callable) -> Callable:
    """``original`` (an attention implementation of transformers), except over a :class:`RoutedLayer`."""
    if getattr(original, "promptshrink_routed", False):
        return original

    def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kw):  # noqa: ANN202
        layout = getattr(_PENDING, "layout", None)
        _PENDING.layout = None
        if layout is None or layout[0] is not key:
            return original(module, query, key, value, *args, **kw)
        return layout[1].attend(module, query, key, value, kw.get("scaling") or module.scaling), None

    attention.promptshrink_routed = True  # type: ignore[attr-defined]
    return attention


for _name, _fn in list(AttentionInterface._global_mapping.items()):
    AttentionInterface.register(_name, _route(_fn))


def refuse_eager(module: nn.Module, press: str) -> None:
    if module.config._attn_implementation == "eager":
        raise InvalidInputError(f"the {press} press needs SDPA or flash attention, not eager")
