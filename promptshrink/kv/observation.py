"""Observation-window queries and attention, recomputed from the captured hidden states.

Prefill can run with SDPA/FlashAttention: a press needs only the last ``window`` queries against all keys, which we
recompute here instead of asking the model for (quadratic) attention weights.
"""

from __future__ import annotations

import torch
from torch import nn


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The self-attention module of every decoder layer (Llama, Mistral, Qwen2/3 style models)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None)
    if layers is None or not all(hasattr(layer, "self_attn") for layer in layers):
        raise TypeError(f"{type(model).__name__} has no decoder layers with a `self_attn` module")
    return [layer.self_attn for layer in layers]


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def window_queries(
    module: nn.Module, hidden: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor], window: int
) -> torch.Tensor:
    """Post-RoPE queries of the last ``window`` tokens, [batch, heads, window, head_dim]."""
    h = hidden[:, -window:]
    q = module.q_proj(h).view(*h.shape[:2], -1, module.head_dim)
    if getattr(module, "q_norm", None) is not None:
        q = module.q_norm(q)
    q = q.transpose(1, 2)
    cos, sin = (t[:, -h.shape[1] :].unsqueeze(1) for t in position_embeddings)
    return q * cos + _rotate_half(q) * sin


def window_attention(queries: torch.Tensor, keys: torch.Tensor, scaling: float, causal: bool = True) -> torch.Tensor:
    """Softmax attention of the window queries over all keys, [batch, kv_heads, group, window, seq] in fp32.

    ``causal``: the queries are the last ``window`` of the keys' tokens (mask the future); otherwise they follow
    every key (a question appended after the compressed context) and see all of them.
    """
    b, h, w, d = queries.shape
    kv_heads, seq = keys.shape[1], keys.shape[2]
    q = queries.reshape(b, kv_heads, h // kv_heads, w, d)
    logits = torch.einsum("bkgwd,bksd->bkgws", q, keys.to(q.dtype)).float() * scaling
    if not causal:
        return logits.softmax(dim=-1)
    pos = torch.arange(seq, device=keys.device)
    future = pos[None, :] > (seq - w + torch.arange(w, device=keys.device))[:, None]
    return logits.masked_fill(future, float("-inf")).softmax(dim=-1)


def window_scores(queries: torch.Tensor, keys: torch.Tensor, scaling: float, causal: bool = True) -> torch.Tensor:
    """Attention each key receives from the window, summed over the window and averaged over the query group."""
    return window_attention(queries, keys, scaling, causal).sum(dim=3).mean(dim=2)
