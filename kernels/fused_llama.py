"""Fused element-wise stages of a Llama decoder layer (`promptshrink.scoring.fused_llama`): one kernel each for
residual add + RMSNorm, rotary embedding + head split, and SiLU(gate) * up.

Each rounds its intermediates to the activation dtype where the eager Hugging Face layer does, so results match
it to within accumulation order; the eager layer launches about 25 element-wise kernels per layer for these.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rmsnorm_kernel(x_ptr, r_ptr, w_ptr, out_ptr, sum_ptr, n, eps, HAS_RES: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n
    x = tl.load(x_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        x = x + tl.load(r_ptr + row * n + cols, mask=mask, other=0.0).to(tl.float32)
        x = x.to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * n + cols, x, mask=mask)
        x = x.to(tl.float32)
    scale = tl.rsqrt(tl.sum(x * x, axis=0) / n + eps)
    y = (x * scale).to(out_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * n + cols, (y * w).to(out_ptr.dtype.element_ty), mask=mask)


def add_rmsnorm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(RMSNorm(s) * weight, s) with s = x + residual (or x): [..., n] contiguous."""
    n = x.shape[-1]
    out = torch.empty_like(x)
    total = torch.empty_like(x) if residual is not None else x
    rows = x.numel() // n
    _add_rmsnorm_kernel[(rows,)](
        x, residual if residual is not None else x, weight, out, total, n, eps,
        HAS_RES=residual is not None, BLOCK=triton.next_power_of_2(n), num_warps=4,
    )  # fmt: skip
    return out, total


@triton.jit
def _rotary_kernel(
    qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, length,
    HQ: tl.constexpr, HK: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr,
):  # fmt: skip
    t = tl.program_id(0).to(tl.int64)
    pos = t % length
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, D)[None, :]
    heads = HQ + 2 * HK
    inside = h < heads
    row = qkv_ptr + t * heads * D
    x = tl.load(row + h * D + d, mask=inside, other=0.0).to(tl.float32)
    partner = tl.where(d < D // 2, d + D // 2, d - D // 2)
    xp = tl.load(row + h * D + partner, mask=inside, other=0.0).to(tl.float32)
    rot = tl.where(d < D // 2, -xp, xp)
    cos = tl.load(cos_ptr + pos * D + d).to(tl.float32)
    sin = tl.load(sin_ptr + pos * D + d).to(tl.float32)
    dtype = q_ptr.dtype.element_ty
    y = ((x * cos).to(dtype).to(tl.float32) + (rot * sin).to(dtype).to(tl.float32)).to(dtype)
    tl.store(q_ptr + t * HQ * D + h * D + d, y, mask=h < HQ)
    tl.store(k_ptr + t * HK * D + (h - HQ) * D + d, y, mask=(h >= HQ) & (h < HQ + HK))
    tl.store(v_ptr + t * HK * D + (h - HQ - HK) * D + d, x.to(dtype), mask=(h >= HQ + HK) & inside)


def rotary_split(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q [B, L, heads, D] and k [B, L, kv_heads, D] with the rotary embedding applied, and v, from the fused
    projection qkv [B, L, (heads + 2 kv_heads) D]; cos and sin [L, D] (the same positions in every row)."""
    b, length, width = qkv.shape
    d = width // (heads + 2 * kv_heads)
    q = torch.empty(b, length, heads, d, dtype=qkv.dtype, device=qkv.device)
    k = torch.empty(b, length, kv_heads, d, dtype=qkv.dtype, device=qkv.device)
    v = torch.empty_like(k)
    _rotary_kernel[(b * length,)](
        qkv, cos, sin, q, k, v, length, HQ=heads, HK=kv_heads, D=d,
        BLOCK_H=triton.next_power_of_2(heads + 2 * kv_heads), num_warps=4,
    )  # fmt: skip
    return q, k, v


@triton.jit
def _silu_mul_kernel(gu_ptr, out_ptr, inner, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inner
    gate = tl.load(gu_ptr + row * 2 * inner + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(gu_ptr + row * 2 * inner + inner + cols, mask=mask, other=0.0).to(tl.float32)
    dtype = out_ptr.dtype.element_ty
    act = (gate / (1.0 + tl.exp(-gate))).to(dtype).to(tl.float32)
    tl.store(out_ptr + row * inner + cols, (act * up).to(dtype), mask=mask)


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """SiLU(gate) * up for gate_up [..., 2 I] = [gate | up]: [..., I]."""
    inner = gate_up.shape[-1] // 2
    out = torch.empty(*gate_up.shape[:-1], inner, dtype=gate_up.dtype, device=gate_up.device)
    block = 1024
    _silu_mul_kernel[(gate_up.numel() // (2 * inner), triton.cdiv(inner, block))](
        gate_up, out, inner, BLOCK=block, num_warps=4
    )
    return out
