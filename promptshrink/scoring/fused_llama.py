"""A fused forward of Llama-family decoders (Llama, SmolLM2) for the scoring pass, same weights, same results.

Per layer: residual add + RMSNorm in one kernel, one matrix product for q/k/v and one for gate/up (weights
concatenated once), rotary embedding + head split in one kernel, SDPA, SiLU(gate) * up in one kernel: 9 launches
where the eager layer makes about 35, most of them small element-wise kernels whose launch latency dominated the
GPU time of a 2K-token request. CUDA uses the Triton kernels of `promptshrink.kernels.fused_llama`; other devices
the PyTorch references below (used by the CPU tests to check the wiring against the eager model).
"""

from __future__ import annotations

import sys
import threading
import weakref
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F


def supports(model: Any) -> bool:
    """Whether ``model`` is a plain Llama decoder this forward reproduces (no biases, SiLU MLP, causal LM)."""
    config = getattr(model, "config", None)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    return bool(
        config is not None
        and getattr(config, "model_type", None) == "llama"
        and getattr(config, "hidden_act", None) == "silu"
        and not getattr(config, "attention_bias", False)
        and not getattr(config, "mlp_bias", False)
        and getattr(config, "pretraining_tp", 1) == 1
        and layers
        and all(type(layer).__name__ == "LlamaDecoderLayer" for layer in layers)
        and hasattr(decoder, "rotary_emb")
    )


def add_rmsnorm(
    x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: (RMSNorm(s) * weight, s) with s = x + residual (or x), rounded as the eager layer rounds."""
    total = x if residual is None else residual + x
    y = total.float()
    y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + eps)
    return weight * y.to(total.dtype), total


def rotary_split(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int, kv_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference: q, k (rotary applied) and v as [B, L, heads, D] from the fused projection; cos, sin [L, D]."""
    b, length, width = qkv.shape
    d = width // (heads + 2 * kv_heads)
    q, k, v = qkv.view(b, length, heads + 2 * kv_heads, d).split([heads, kv_heads, kv_heads], dim=2)
    cos, sin = cos[None, :, None], sin[None, :, None]

    def rotate(x: torch.Tensor) -> torch.Tensor:
        return x * cos + torch.cat((-x[..., d // 2 :], x[..., : d // 2]), dim=-1) * sin

    return rotate(q), rotate(k), v


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """Reference: SiLU(gate) * up for [..., 2 I] = [gate | up]."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


class FusedLlama:
    """The decoder's last hidden states (after the final norm) for input ids [B, L], right padding allowed."""

    def __init__(self, model: Any) -> None:
        decoder = model.get_decoder()
        config = model.config
        self.embed, self.rotary = decoder.embed_tokens, decoder.rotary_emb
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.eps = float(config.rms_norm_eps)
        self.norms: list[torch.Tensor] = []  # input norm of each layer, its post-attention norm, ..., final norm
        self.weights: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for layer in decoder.layers:
                attn, mlp = layer.self_attn, layer.mlp
                qkv = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
                gate_up = torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])
                self.weights.append((qkv, attn.o_proj.weight, gate_up, mlp.down_proj.weight))
                self.norms += [layer.input_layernorm.weight, layer.post_attention_layernorm.weight]
        self.norms.append(decoder.norm.weight)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        ops = _ops(ids.device)
        b, length = ids.shape
        x = self.embed(ids)
        positions = torch.arange(length, device=ids.device)[None]
        cos, sin = (t[0].contiguous() for t in self.rotary(x, positions))
        h, residual = ops.add_rmsnorm(x, None, self.norms[0], self.eps)
        for i, (qkv_w, o_w, gate_up_w, down_w) in enumerate(self.weights):
            q, k, v = ops.rotary_split(F.linear(h, qkv_w), cos, sin, self.heads, self.kv_heads)
            attn = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True, enable_gqa=True
            )
            attn = attn.transpose(1, 2).reshape(b, length, -1)
            h, residual = ops.add_rmsnorm(F.linear(attn, o_w), residual, self.norms[2 * i + 1], self.eps)
            down = F.linear(ops.silu_mul(F.linear(h, gate_up_w)), down_w)
            h, residual = ops.add_rmsnorm(down, residual, self.norms[2 * i + 2], self.eps)
        return h


def _ops(device: torch.device) -> ModuleType:
    """The Triton kernels on CUDA (when Triton is there), else this module's references."""
    from ..kv.dispatch import triton_module

    kernels = triton_module("fused_llama") if device.type == "cuda" else None
    return kernels or sys.modules[__name__]


_FUSED: weakref.WeakKeyDictionary[Any, FusedLlama | None] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def fused_decoder(model: Any) -> FusedLlama | None:
    """The fused forward of ``model`` (built once per model), or None when `supports` says no."""
    with _LOCK:
        if model not in _FUSED:
            _FUSED[model] = FusedLlama(model) if supports(model) else None
        return _FUSED[model]
