"""Fused ChunkKV selection: chunk-score pooling + top-k chunks (one program per batch row), then a KV row gather.

Layout: the first ``offset = seq % chunk`` tokens (attention sinks) are always kept, the rest is cut into whole
chunks; the output holds the prefix then the kept chunks in position order, shared by all KV heads of a row.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _chunk_topk_kernel(
    scores_ptr, out_ptr, offset, n_chunks, k_chunks, stride_s, stride_o, CHUNK: tl.constexpr, BLOCK_C: tl.constexpr
):
    row = tl.program_id(0)
    c = tl.arange(0, BLOCK_C)
    valid = c < n_chunks
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for j in tl.static_range(CHUNK):
        acc += tl.load(scores_ptr + row * stride_s + offset + c * CHUNK + j, mask=valid, other=0.0).to(tl.float32)
    bits = acc.to(tl.int32, bitcast=True)
    mono = tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # order-preserving int view of the float
    key = (mono.to(tl.int64) << 32) | c.to(tl.int64)  # unique: ties broken by chunk index
    key = tl.where(valid, key, -9223372036854775807)
    ranked = tl.sort(key, descending=True)
    threshold = tl.sum(tl.where(c == k_chunks - 1, ranked, 0))
    keep = valid & (key >= threshold)
    slot = tl.cumsum(keep.to(tl.int32), 0) - 1
    tl.store(out_ptr + row * stride_o + slot, c, mask=keep)


@triton.jit
def _gather_kernel(
    k_ptr, v_ptr, idx_ptr, ko_ptr, vo_ptr, n_out, offset, heads,
    s_kb, s_kh, s_ks, s_ob, s_oh, s_os, s_ib,
    CHUNK: tl.constexpr, D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    bh = tl.program_id(0)
    b = bh // heads
    h = bh % heads
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    live = t < n_out
    prefix = t < offset
    rel = tl.maximum(t - offset, 0)
    chunk_id = tl.load(idx_ptr + b * s_ib + rel // CHUNK, mask=live & ~prefix, other=0)
    src = tl.where(prefix, t, offset + chunk_id * CHUNK + rel % CHUNK)
    d = tl.arange(0, D)
    m = live[:, None]
    src_off = b * s_kb + h * s_kh + src[:, None] * s_ks + d[None, :]
    dst_off = b * s_ob + h * s_oh + t[:, None] * s_os + d[None, :]
    tl.store(ko_ptr + dst_off, tl.load(k_ptr + src_off, mask=m), mask=m)
    tl.store(vo_ptr + dst_off, tl.load(v_ptr + src_off, mask=m), mask=m)


def chunk_select(
    scores: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, chunk: int, k_chunks: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kept keys, kept values, kept chunk ids [batch, k_chunks]) for token scores [batch, seq]."""
    b, h, seq, d = keys.shape
    offset = seq % chunk
    n_chunks = seq // chunk
    k_chunks = max(1, min(k_chunks, n_chunks))
    scores = scores.contiguous()
    keys, values = keys.contiguous(), values.contiguous()
    ids = torch.empty(b, k_chunks, dtype=torch.int32, device=keys.device)
    block_c = triton.next_power_of_2(n_chunks)
    _chunk_topk_kernel[(b,)](
        scores, ids, offset, n_chunks, k_chunks, scores.stride(0), ids.stride(0),
        CHUNK=chunk, BLOCK_C=block_c, num_warps=8 if block_c >= 4096 else 4,
    )  # fmt: skip
    return (*gather_chunks(keys, values, ids, chunk, offset), ids)


def gather_chunks(
    keys: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, chunk: int, offset: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Copy the prefix and the chunks ``ids`` [batch, k] of every head into new contiguous tensors."""
    b, h, _, d = keys.shape
    n_out = offset + ids.shape[1] * chunk
    ko = torch.empty(b, h, n_out, d, dtype=keys.dtype, device=keys.device)
    vo = torch.empty_like(ko)
    block_t = 64
    _gather_kernel[(b * h, triton.cdiv(n_out, block_t))](
        keys, values, ids, ko, vo, n_out, offset, h,
        keys.stride(0), keys.stride(1), keys.stride(2), ko.stride(0), ko.stride(1), ko.stride(2), ids.stride(0),
        CHUNK=chunk, D=d, BLOCK_T=block_t,
    )  # fmt: skip
    return ko, vo
