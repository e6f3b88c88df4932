"""Q-Filters scoring: score[b, h, s] = ⟨keys[b, h, s], filters[h]⟩, one pass over the keys (bandwidth bound)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _qfilter_kernel(
    k_ptr, f_ptr, o_ptr, seq, heads, s_kb, s_kh, s_ks, s_ob, s_oh, D: tl.constexpr, BLOCK: tl.constexpr
):
    bh = tl.program_id(0)
    b = bh // heads
    h = bh % heads
    s = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, D)
    m = s < seq
    k = tl.load(k_ptr + b * s_kb + h * s_kh + s[:, None] * s_ks + d[None, :], mask=m[:, None], other=0.0)
    f = tl.load(f_ptr + h * D + d).to(tl.float32)
    tl.store(o_ptr + b * s_ob + h * s_oh + s, tl.sum(k.to(tl.float32) * f[None, :], axis=1), mask=m)


def qfilter_scores(keys: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Scores [batch, kv_heads, seq] in fp32 for keys [batch, kv_heads, seq, dim] and filters [kv_heads, dim]."""
    b, h, seq, d = keys.shape
    keys = keys if keys.stride(-1) == 1 else keys.contiguous()
    filters = filters.contiguous().float()
    out = torch.empty(b, h, seq, dtype=torch.float32, device=keys.device)
    block = 128
    _qfilter_kernel[(b * h, triton.cdiv(seq, block))](
        keys, filters, out, seq, h, keys.stride(0), keys.stride(1), keys.stride(2), out.stride(0), out.stride(1),
        D=d, BLOCK=block,
    )  # fmt: skip
    return out
