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

from .attention import window_attention
from .base import BasePress


@dataclass
class ZeroMergePress(BasePress):
    """``max_residual`` bounds the fraction of a head's slots that are residual; the window is always kept exactly."""

    max_residual: float = 0.25

    def compress(
        self,
        layer: int,
        n_layers: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seq = keys.shape[-2]
        k = self.n_keep(seq)
        if k >= seq:
            return keys, values
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
        out_k, out_v = torch.empty_like(keys[:, :, :k]), torch.empty_like(values[:, :, :k])
        for i in range(b):
            for h in range(kv_heads):
                out_k[i, h], out_v[i, h] = self._head(
                    keys[i, h], values[i, h], score[i, h], k, int(residual[i, h]), q_mean[i, h], scaling
                )
        return out_k, out_v

    @staticmethod
    def _head(
        keys: torch.Tensor,
        values: torch.Tensor,
        score: torch.Tensor,
        k: int,
        n_res: int,
        q_mean: torch.Tensor,
        scaling: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        order = score.topk(k - n_res).indices.sort().values
        if n_res == 0:
            return keys[order], values[order]
        evicted_mask = torch.ones_like(score, dtype=torch.bool)
        evicted_mask[order] = False
        evicted = evicted_mask.nonzero().squeeze(1)
        group = torch.arange(len(evicted), device=keys.device) * n_res // len(evicted)
        w = score[evicted].clamp_min(1e-12)
        norm = torch.zeros(n_res, device=keys.device).index_add_(0, group, w)
        w = (w / norm[group])[:, None]
        mk = torch.zeros(n_res, keys.shape[-1], device=keys.device).index_add_(0, group, w * keys[evicted].float())
        mv = torch.zeros(n_res, keys.shape[-1], device=keys.device).index_add_(0, group, w * values[evicted].float())
        count = torch.bincount(group, minlength=n_res).float()
        mk += count.log()[:, None] * q_mean / (scaling * q_mean.square().sum().clamp_min(1e-12))
        return torch.cat([keys[order], mk.to(keys.dtype)]), torch.cat([values[order], mv.to(values.dtype)])
