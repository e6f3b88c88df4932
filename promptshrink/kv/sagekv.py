"""SAGE-KV (2025): one top-k after prefill, first at token level (all heads), then at head level among the winners."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..params import integer, number
from .base import BasePress, gather_tokens
from .observation import window_scores
from .registry import register_press


@register_press
@dataclass
class SageKVPress(BasePress):
    """Sinks and the window (query-agnostic mode) always stay; ``pool`` x budget candidates are chosen by attention
    summed over heads, then each KV head keeps its own top entries among the candidates.

    Reference: SAGE-KV (self-attention guided KV eviction), 2025.

    Args:
        sink: First tokens (attention sinks) always kept.
        pool: Token-level candidates, as a multiple (>= 1) of the per-head budget.
    """

    name = "sagekv"
    summary = "One top-k after prefill: token-level candidates over all heads, then per-head top entries."

    sink: int = 4
    pool: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("sink", self.sink, 0)
        number("pool", self.pool, 1.0)

    def select(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seq = keys.shape[-2]
        assert queries is not None
        scores = window_scores(queries, keys, scaling, self.causal)
        scores[..., : self.sink] = 1e6
        if self.causal:
            scores[..., -self.window :] = 1e6
        token = scores.sum(dim=1)
        cand = token.topk(min(seq, math.ceil(self.pool * k)), dim=-1).indices[:, None].expand(-1, scores.shape[1], -1)
        best = scores.gather(2, cand).topk(k, dim=-1).indices
        return gather_tokens(keys, values, cand.gather(2, best).sort(dim=-1).values)
