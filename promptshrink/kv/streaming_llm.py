"""StreamingLLM (Xiao et al., 2023): keep a few attention-sink tokens and the most recent window."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..params import integer
from .base import BasePress
from .registry import register_press


@register_press
@dataclass
class StreamingLLMPress(BasePress):
    """Keep the first ``sink`` tokens and the last ``n_keep - sink``; needs no queries or attention.

    Reference: Xiao et al., "Efficient Streaming Language Models with Attention Sinks", ICLR 2024.

    Args:
        sink: First tokens (attention sinks) always kept.
    """

    name = "streaming_llm"
    summary = "Attention sinks plus the most recent tokens."
    needs_queries = False

    sink: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("sink", self.sink, 0)

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
        sink = min(self.sink, k)
        recent = k - sink
        keep = torch.cat([keys[:, :, :sink], keys[:, :, seq - recent :]], dim=2)
        return keep, torch.cat([values[:, :, :sink], values[:, :, seq - recent :]], dim=2)
