"""SnapKV (Li et al., 2024): attention from the last observation window, pooled, top-k per head plus the window."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..params import integer
from .base import ScorerPress
from .observation import window_scores
from .registry import register_press


@register_press
@dataclass
class SnapKVPress(ScorerPress):
    """Score = window attention max-pooled over ``kernel`` neighbouring tokens; the window itself is kept.

    Reference: Li et al., "SnapKV: LLM Knows What You are Looking for Before Generation", 2024.

    Args:
        kernel: Odd number of neighbouring tokens the window attention is max-pooled over.
    """

    name = "snapkv"
    summary = "Window attention, max-pooled over neighbours; top entries per head plus the window."

    kernel: int = 5
    protect: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        if integer("kernel", self.kernel) % 2 == 0:
            raise InvalidInputError(f"kernel must be odd (pooling keeps the sequence length), got {self.kernel}")

    def score(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor | None, scaling: float
    ) -> torch.Tensor:
        assert queries is not None
        scores = window_scores(queries, keys, scaling, self.causal)
        b, h, s = scores.shape
        pooled = F.max_pool1d(scores.view(b * h, 1, s), self.kernel, stride=1, padding=self.kernel // 2)
        return pooled.view(b, h, s)
