"""Dispatch to the Triton kernels in `promptshrink.kernels` on CUDA; PyTorch references elsewhere."""

from __future__ import annotations

import importlib
import importlib.util
from functools import cache
from types import ModuleType

import torch


@cache
def triton_module(name: str) -> ModuleType | None:
    """``promptshrink.kernels.<name>`` (it imports Triton), or None without CUDA or Triton."""
    if not torch.cuda.is_available() or importlib.util.find_spec("triton") is None:
        return None
    return importlib.import_module(f"promptshrink.kernels.{name}")


def qfilter_scores_reference(keys: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bhsd,hd->bhs", keys.float(), filters.float())


def qfilter_scores(keys: torch.Tensor, filters: torch.Tensor, use_triton: bool = True) -> torch.Tensor:
    """⟨key, filter⟩ per entry, [batch, kv_heads, seq] fp32."""
    mod = triton_module("qfilter_score") if use_triton and keys.is_cuda else None
    return mod.qfilter_scores(keys, filters) if mod else qfilter_scores_reference(keys, filters)


def chunk_select_reference(
    scores: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, chunk: int, k_chunks: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the ``seq % chunk`` prefix and the ``k_chunks`` chunks with the largest summed score (see kernels/)."""
    b, h, seq, d = keys.shape
    offset, n_chunks = seq % chunk, seq // chunk
    k_chunks = max(1, min(k_chunks, n_chunks))
    pooled = scores[:, offset:].float().reshape(b, n_chunks, chunk).sum(-1)
    ids = pooled.topk(k_chunks, dim=-1).indices.sort(dim=-1).values
    return (*gather_chunks_reference(keys, values, ids, chunk, offset), ids.int())


def gather_chunks_reference(
    keys: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, chunk: int, offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = offset + ids.long()[..., None] * chunk + torch.arange(chunk, device=keys.device)
    prefix = torch.arange(offset, device=keys.device).expand(ids.shape[0], -1)
    idx = torch.cat([prefix, tokens.flatten(1)], dim=1)[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
    return keys.gather(2, idx), values.gather(2, idx)


def chunk_select(
    scores: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, chunk: int, k_chunks: int, use_triton: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    mod = triton_module("chunk_select") if use_triton and keys.is_cuda else None
    fn = mod.chunk_select if mod else chunk_select_reference
    return fn(scores, keys, values, chunk, k_chunks)


def gather_chunks(
    keys: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, chunk: int, offset: int, use_triton: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    mod = triton_module("chunk_select") if use_triton and keys.is_cuda else None
    fn = mod.gather_chunks if mod else gather_chunks_reference
    return fn(keys, values, ids, chunk, offset)
