"""PyramidInfer (Yang et al., 2024): retention shrinks with depth; tokens chosen by recent-attention consistency."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..params import number
from .base import ScorerPress
from .observation import window_attention
from .registry import register_press


@register_press
@dataclass
class PyramidInferPress(ScorerPress):
    """Layer l keeps ratio x (1 + slope x (1 - 2l / (L - 1))) of its entries (the mean over layers is ``ratio`` while
    ratio x (1 + slope) <= 1; ratio 1 keeps everything);
    a key's score is its attention from the window queries, weighted ``decay``^age so recent queries count most.

    Layers end up with different lengths: decode one token at a time with SDPA/flash attention (``kv.generate``
    does), since a single eager mask cannot fit layers of several lengths.
    Reference: Yang et al., "PyramidInfer: Pyramid KV Cache Compression for High-throughput LLM Inference", 2024.

    Args:
        slope: How much (>= 0) retention grows at the first layer and shrinks at the last.
        decay: Weight in (0, 1] per step of age of a window query; lower favours the most recent queries.
    """

    name = "pyramidinfer"
    summary = "Retention shrinking with depth; keys scored by recency-weighted window attention."

    slope: float = 0.5
    decay: float = 0.9
    protect: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        number("slope", self.slope, 0.0)
        number("decay", self.decay, 0.0, 1.0, exclusive_low=True)

    def n_keep(self, seq_len: int, layer: int = 0, n_layers: int = 1) -> int:
        if self.ratio >= 1.0:
            return seq_len
        depth = 1 - 2 * layer / (n_layers - 1) if n_layers > 1 else 0.0
        frac = min(1.0, self.ratio * (1 + self.slope * depth))
        return max(1, min(seq_len, round(seq_len * frac)))

    def score(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor | None, scaling: float
    ) -> torch.Tensor:
        assert queries is not None
        attn = window_attention(queries, keys, scaling, self.causal)
        w = attn.shape[3]
        age = torch.arange(w - 1, -1, -1, device=attn.device, dtype=attn.dtype)
        weights = self.decay**age
        return torch.einsum("bkgws,w->bks", attn, weights / weights.sum())
