"""ZeroMerge (2025): head-level budgets from several importance signals; evicted entries merged into residual slots.

Every KV head keeps the same number of slots (so the cache stays one tensor per layer); a head's budget decides how
many are exact entries and how many are residual slots. Heads whose window attention is spread out (high entropy)
get more residual slots. A residual slot is the score-weighted mean of a run of evicted entries; its key is shifted
along the mean window query so that its logit grows by log(run length), compensating for the merged mass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..params import number
from .base import BasePress
from .observation import window_attention
from .registry import register_press


@register_press
@dataclass
class ZeroMergePress(BasePress):
    """Per-head budgets from attention, value norms and entropy; evicted entries merge into residual slots.

    Reference: ZeroMerge (parameter-free KV cache compression with merging), 2025.

    Args:
        max_residual: Largest fraction in [0, 1] of a head's slots that are residual; the window stays exact.
    """

    name = "zeromerge"
    summary = "Head-level budgets from several signals; evicted entries merged into residual slots."

    max_residual: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        number("max_residual", self.max_residual, 0.0, 1.0)

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
        b, kv_heads = keys.shape[:2]
        attn = window_attention(queries, keys, scaling, self.causal).mean(dim=(2, 3))  # [b, kv_heads, seq]
        vnorm = values.float().norm(dim=-1)
        score = attn * vnorm / vnorm.mean(dim=-1, keepdim=True)  # attention mass x value magnitude
        p = attn / attn.sum(-1, keepdim=True)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(seq)
        exact = self.window if self.causal else 0  # the window's entries stay exact (query-agnostic mode)
        residual = (self.max_residual * k * entropy).floor().long().clamp(max=max(0, k - exact - 1))
        if exact:
            score[..., -exact:] = float("inf")
        q_mean = queries.float().reshape(b, kv_heads, -1, queries.shape[-1]).mean(dim=2)
        return self._merge(keys, values, score, k, residual, q_mean, scaling)

    @staticmethod
    def _merge(
        keys: torch.Tensor,
        values: torch.Tensor,
        score: torch.Tensor,
        k: int,
        residual: torch.Tensor,
        q_mean: torch.Tensor,
        scaling: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All heads at once: head (i, h) keeps its ``k - residual[i, h]`` best entries in order, then
        ``residual[i, h]`` slots, slot g merging the g-th of equal-count runs of its evicted entries (segment sums)."""
        seq, dim = keys.shape[-2], keys.shape[-1]
        n_exact = (k - residual)[..., None]  # [b, h, 1]
        top = score.topk(k, dim=-1).indices  # best first; the first n_exact of each head are kept
        keep = torch.arange(k, device=keys.device) < n_exact
        kept = torch.zeros_like(score, dtype=torch.bool).scatter_(-1, top, keep)
        evicted = ~kept
        contrib = evicted & (residual[..., None] > 0)
        group = (evicted.cumsum(-1) - 1) * residual[..., None] // (seq - n_exact)
        slots = max(1, int(residual.max()))
        # entries that merge nowhere add 0 to a slot spread by position (no atomic pile-up on one slot)
        spread = torch.arange(seq, device=keys.device) % slots
        slot = torch.where(contrib, group, spread)
        w = torch.where(contrib, score.clamp_min(1e-12), 0.0)
        norm = torch.zeros(*score.shape[:2], slots, device=keys.device).scatter_add_(-1, slot, w)
        w = torch.where(contrib, w / norm.gather(-1, slot), 0.0)[..., None]
        count = torch.zeros_like(norm).scatter_add_(-1, slot, contrib.float())
        index = slot[..., None].expand(-1, -1, -1, dim)
        mk = torch.zeros(*norm.shape, dim, device=keys.device).scatter_add_(2, index, w * keys.float())
        mv = torch.zeros_like(mk).scatter_add_(2, index, w * values.float())
        shift = count.clamp_min(1).log()[..., None] * q_mean[:, :, None]
        mk += shift / (scaling * q_mean.square().sum(-1).clamp_min(1e-12))[..., None, None]
        order = torch.where(keep, top, seq).sort(-1).values.clamp_max(seq - 1)[..., None].expand(-1, -1, -1, dim)
        res = (torch.arange(k, device=keys.device) - n_exact).clamp(0, slots - 1)[..., None].expand(-1, -1, -1, dim)
        out_k = torch.where(keep[..., None], keys.gather(2, order), mk.to(keys.dtype).gather(2, res))
        out_v = torch.where(keep[..., None], values.gather(2, order), mv.to(values.dtype).gather(2, res))
        return out_k, out_v
