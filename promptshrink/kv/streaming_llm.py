"""StreamingLLM (Xiao et al., 2023): keep a few attention-sink tokens and the most recent window."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import BasePress


@dataclass
class StreamingLLMPress(BasePress):
    """Keep the first ``sink`` tokens and the last ``n_keep - sink``; needs no queries or attention."""

    sink: int = 4
    needs_queries = False

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
