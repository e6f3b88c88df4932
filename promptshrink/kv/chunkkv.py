"""ChunkKV (Liu et al., 2025): keep whole chunks ranked by window attention; adjacent layers reuse the indices."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..params import flag, integer
from .base import BasePress
from .dispatch import chunk_select, gather_chunks
from .observation import window_scores
from .registry import register_press


@register_press
@dataclass
class ChunkKVPress(BasePress):
    """Chunks of ``chunk`` tokens, scored by attention summed over the window and all heads (so every head keeps the
    same chunks); the first layer of each group of ``reuse`` layers selects, the others reuse its chunk ids. The
    ``seq % chunk`` first tokens (attention sinks) and the chunks holding the window (query-agnostic mode) are always
    kept; the keep-count is rounded down to whole chunks (at least one).

    Reference: Liu et al., "ChunkKV: Semantic-Preserving KV Cache Compression for Efficient Long-Context LLM
    Inference", 2025.

    Args:
        chunk: Tokens per chunk.
        reuse: Layers per group sharing the chunk ids chosen by the group's first layer.
        use_triton: Use the Triton kernels on CUDA when available (else the PyTorch reference).
    """

    name = "chunkkv"
    summary = "Whole chunks ranked by window attention; adjacent layers reuse the chunk ids."

    chunk: int = 10
    reuse: int = 2
    use_triton: bool = True
    _ids: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("chunk", self.chunk)
        integer("reuse", self.reuse)
        flag("use_triton", self.use_triton)

    def reset(self) -> None:
        self._ids = None

    def n_keep(self, seq_len: int, layer: int = 0, n_layers: int = 1) -> int:
        """The shared keep-count, rounded down to the ``seq % chunk`` prefix plus whole chunks (at least one)."""
        offset = seq_len % self.chunk
        chunks = max(1, (super().n_keep(seq_len, layer, n_layers) - offset) // self.chunk)
        return min(seq_len, offset + chunks * self.chunk)

    def select(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        offset = keys.shape[-2] % self.chunk
        k_chunks = (k - offset) // self.chunk
        if layer % self.reuse and self._ids is not None:
            return gather_chunks(keys, values, self._ids, self.chunk, offset, self.use_triton)
        assert queries is not None
        scores = window_scores(queries, keys, scaling, self.causal).sum(dim=1)
        if self.causal:
            scores[:, -self.window :] = 1e6
        keys, values, self._ids = chunk_select(scores, keys, values, self.chunk, k_chunks, self.use_triton)
        return keys, values
