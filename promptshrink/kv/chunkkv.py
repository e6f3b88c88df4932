"""ChunkKV (Liu et al., 2025): keep whole chunks ranked by window attention; adjacent layers reuse the indices."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import BasePress
from .dispatch import chunk_select, gather_chunks
from .observation import window_scores


@dataclass
class ChunkKVPress(BasePress):
    """Chunks of ``chunk`` tokens, scored by attention summed over the window and all heads (so every head keeps the
    same chunks); the first layer of each group of ``reuse`` layers selects, the others reuse its chunk ids. The
    ``seq % chunk`` first tokens (attention sinks) and the chunks holding the window (query-agnostic mode) are always
    kept."""

    chunk: int = 10
    reuse: int = 2
    use_triton: bool = True
    _ids: torch.Tensor | None = field(default=None, init=False, repr=False)

    def reset(self) -> None:
        self._ids = None

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
        offset = seq % self.chunk
        k_chunks = max(1, (self.n_keep(seq) - offset) // self.chunk)
        if offset + k_chunks * self.chunk >= seq:
            return keys, values
        if layer % self.reuse and self._ids is not None:
            return gather_chunks(keys, values, self._ids, self.chunk, offset, self.use_triton)
        assert queries is not None
        scores = window_scores(queries, keys, scaling, self.causal).sum(dim=1)
        if self.causal:
            scores[:, -self.window :] = 1e6
        keys, values, self._ids = chunk_select(scores, keys, values, self.chunk, k_chunks, self.use_triton)
        return keys, values
