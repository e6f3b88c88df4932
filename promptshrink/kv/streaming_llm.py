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
        sink = min(self.sink, k)
        recent = k - sink
        keep = torch.cat([keys[:, :, :sink], keys[:, :, seq - recent :]], dim=2)
        return keep, torch.cat([values[:, :, :sink], values[:, :, seq - recent :]], dim=2)
