"""SnapKV (Li et al., 2024): attention from the last observation window, pooled, top-k per head plus the window."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import ScorerPress
from .observation import window_scores


@dataclass
class SnapKVPress(ScorerPress):
    """Score = window attention max-pooled over ``kernel`` neighbouring tokens; the window itself is kept."""

    kernel: int = 5
    protect: int = 32

    def score(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor | None, scaling: float
    ) -> torch.Tensor:
        assert queries is not None
        scores = window_scores(queries, keys, scaling, self.causal)
        b, h, s = scores.shape
        pooled = F.max_pool1d(scores.view(b * h, 1, s), self.kernel, stride=1, padding=self.kernel // 2)
        return pooled.view(b, h, s)
