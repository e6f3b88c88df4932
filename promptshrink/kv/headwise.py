"""Head-wise budgets (AdaKV-style): one budget per layer, shared out among its KV heads by their scores.

A layer keeps ``heads x n_keep`` entries in all, as a uniform press would, but a head whose attention is
concentrated gives slots to heads whose attention is spread out: the wrapped scorer press's scores (normalised to
sum to 1 per head, so heads compare) are ranked across all heads of the layer at once, after each head is
guaranteed ``floor`` of the uniform budget (the paper's safeguard).

Storage stays one [batch, kv_heads, n_keep, head_dim] tensor per layer: the kept entries form a pool of
``kv_heads x n_keep`` slots, each owned by one head (a head's entries need not sit in its own row). The cache layer
becomes a :class:`HeadwiseLayer` that carries the owner of every slot; tokens appended while decoding stay in their
head's row after the pool. Attention over such a layer is routed (`promptshrink.kv.routing`) to
:func:`headwise_attention` (plain PyTorch, CPU or CUDA): each query head sees the pool slots its KV head owns and
its own appended entries. Memory is what ``n_keep`` says; the pool's attention costs ``kv_heads`` times a uniform
cache's (every head scores every slot and masks the others), which matters only for the short decode steps it
serves. Models must use SDPA or flash attention (not ``eager``), batches must not be padded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..params import number
from .base import hook_cache
from .registry import register_press
from .routing import RoutedLayer, refuse_eager
from .wrapper import ScorerWrapper


class HeadwiseLayer(RoutedLayer):
    """A cache layer whose first ``pool`` entries per row are slots of a shared pool, ``owner`` [batch,
    kv_heads x pool] naming the KV head each slot (row-major over [kv_heads, pool]) belongs to."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, owner: torch.Tensor, pool: int) -> None:
        super().__init__(keys, values)
        self.owner, self.pool = owner, pool

    def attend(
        self, module: nn.Module, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        return headwise_attention(query, keys, values, self.owner, self.pool, scaling)


def headwise_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, owner: torch.Tensor, pool: int, scaling: float
) -> torch.Tensor:
    """Attention of ``query`` [batch, heads, q, dim] over a head-wise layer; returns [batch, q, heads, dim].

    Pool slot j is seen by the query heads of KV head ``owner[:, j]``; the entries after the pool are each row's
    own, the last ``q`` of them being the queries' tokens (causal)."""
    b, heads, q_len, dim = query.shape
    kv_heads, tail = keys.shape[1], keys.shape[2] - pool
    group = heads // kv_heads
    q = query.float()
    pool_k = keys[:, :, :pool].reshape(b, kv_heads * pool, dim).float()
    pool_v = values[:, :, :pool].reshape(b, kv_heads * pool, dim).float()
    logits_pool = torch.einsum("bhqd,bsd->bhqs", q, pool_k) * scaling
    head_of = torch.arange(heads, device=query.device) // group
    foreign = owner[:, None, None, :] != head_of[None, :, None, None]
    logits_pool = logits_pool.masked_fill(foreign, float("-inf"))
    tail_k = keys[:, :, pool:].float().repeat_interleave(group, dim=1)
    tail_v = values[:, :, pool:].float().repeat_interleave(group, dim=1)
    logits_tail = torch.einsum("bhqd,bhtd->bhqt", q, tail_k) * scaling
    future = (
        torch.arange(tail, device=query.device)[None, :]
        > (tail - q_len + torch.arange(q_len, device=q.device))[:, None]
    )
    logits_tail = logits_tail.masked_fill(future, float("-inf"))
    weights = torch.cat([logits_pool, logits_tail], dim=-1).softmax(dim=-1)
    out = torch.einsum("bhqs,bsd->bhqd", weights[..., : kv_heads * pool], pool_v)
    out = out + torch.einsum("bhqt,bhtd->bhqd", weights[..., kv_heads * pool :], tail_v)
    return out.to(query.dtype).transpose(1, 2).contiguous()


@register_press
@dataclass
class HeadwisePress(ScorerWrapper):
    """The layer's ``kv_heads x n_keep`` entries shared out among its heads by the wrapped scorer's scores.

    With ``floor`` = 1 every head keeps its own top ``n_keep`` (the wrapped press itself); lower floors let
    budgets follow the scores. The wrapped press's protected recent entries stay in every head.
    Reference: Feng et al., "Ada-KV: Optimizing KV Cache Eviction by Adaptive Budget Allocation for Efficient LLM
    Inference", 2024.

    Args:
        floor: Share in [0, 1] of the uniform per-head budget every head is guaranteed (the safeguard).
    """

    name = "headwise"
    summary = "AdaKV-style head-wise budgets: a layer's slots shared out among its heads by a scorer's scores."

    floor: float = 0.2
    _owners: dict[int, tuple[torch.Tensor, int]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        number("floor", self.floor, 0.0, 1.0)

    def reset(self) -> None:
        self._owners = {}
        super().reset()

    def budgets(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor | None, scaling: float, k: int
    ) -> torch.Tensor:
        """Flat indices (head x seq + position) of the kept entries, [batch, kv_heads x k], sorted (head-major)."""
        inner = self.inner
        inner.question = self.question
        raw = inner.score(layer, keys, values, queries, scaling).float()
        s = raw - raw.amin(dim=-1, keepdim=True)
        s = s / s.sum(dim=-1, keepdim=True).clamp_min(1e-30)  # in [0, 1], sums to 1 per head: heads compare
        if inner.protect and self.causal:
            raw[..., -inner.protect :] = torch.finfo(raw.dtype).max
            s[..., -inner.protect :] = 2.0  # protected: above every unprotected entry
        guaranteed = raw.topk(round(self.floor * k), dim=-1).indices  # the wrapped press's own ranking
        s = s.scatter(-1, guaranteed, 4.0)  # above those
        b, kv_heads, seq = s.shape
        return s.reshape(b, kv_heads * seq).topk(kv_heads * k, dim=-1).indices.sort(dim=-1).values

    def select(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, kv_heads, seq, dim = keys.shape
        flat = self.budgets(layer, keys, values, queries, scaling, k)
        self._owners[layer] = (flat // seq, k)
        idx = flat[..., None].expand(-1, -1, dim)
        pick = lambda t: t.reshape(b, kv_heads * seq, dim).gather(1, idx).view(b, kv_heads, k, dim)  # noqa: E731
        return pick(keys), pick(values)

    def _hook(self, layer: int, n_layers: int) -> Any:
        at_prefill = super()._hook(layer, n_layers)

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            output = at_prefill(module, args, kwargs, output)
            if layer in self._owners:
                refuse_eager(module, self.name)
                owner, pool = self._owners.pop(layer)
                cache = hook_cache(kwargs)
                cache.layers[layer] = HeadwiseLayer(cache.layers[layer].keys, cache.layers[layer].values, owner, pool)
            return output

        return hook
