"""Prefill with a press, then decode on the compressed cache with explicit positions."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from .base import BasePress


def cache_kwarg(model: nn.Module) -> str:
    """Name of the cache argument of ``model.forward`` (``cache`` in recent transformers, else ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def new_cache() -> Any:
    from transformers import DynamicCache

    return DynamicCache()


def uniform(cache: Any) -> bool:
    """True when every layer holds the same number of entries (one attention mask fits all)."""
    return len({layer.keys.shape[-2] for layer in cache.layers}) == 1


@contextmanager
def sdpa_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily switch an eager model to SDPA, which needs no mask for one-token steps."""
    before = model.config._attn_implementation
    if before != "eager" or not hasattr(model, "set_attn_implementation"):
        yield
        return
    model.set_attn_implementation("sdpa")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@torch.no_grad()
def prefill(model: nn.Module, input_ids: torch.Tensor, press: BasePress | None = None) -> Any:
    """Run the context through the model (press applied) and return its cache."""
    cache = new_cache()
    with press(model) if press is not None else nullcontext():
        model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
    return cache


@torch.no_grad()
def step(model: nn.Module, cache: Any, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Logits [batch, len, vocab] for ``ids`` at absolute positions ``start...``, appended to ``cache``."""
    pos = torch.arange(start, start + ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
    out = model(input_ids=ids, position_ids=pos, use_cache=True, **{cache_kwarg(model): cache})
    return out.logits


@torch.no_grad()
def decode(
    model: nn.Module,
    cache: Any,
    prompt_ids: torch.Tensor,
    start: int,
    max_new_tokens: int,
    eos_token_id: int | None = None,
) -> list[int]:
    """Greedy decoding: feed ``prompt_ids`` (one token at a time when layer lengths differ), then generate."""
    with nullcontext() if uniform(cache) else sdpa_attention(model):
        pieces = [prompt_ids] if uniform(cache) else list(prompt_ids.split(1, dim=1))
        for piece in pieces:
            logits = step(model, cache, piece, start)
            start += piece.shape[1]
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(int(nxt[0, 0]))
            if eos_token_id is not None and out[-1] == eos_token_id:
                break
            logits = step(model, cache, nxt, start)
            start += 1
    return out


def generate(
    model: nn.Module,
    tokenizer: Any,
    context: str,
    question: str = "",
    press: BasePress | str | None = None,
    ratio: float = 0.5,
    max_new_tokens: int = 32,
) -> str:
    """Answer ``question`` about ``context``: only the context's cache is compressed (the question stays whole)."""
    from . import make_press

    if isinstance(press, str):
        press = make_press(press, ratio=ratio, model=model)
    device = next(model.parameters()).device
    ctx_ids = tokenizer(context, return_tensors="pt").input_ids.to(device)
    q_ids = tokenizer(question or "\n", add_special_tokens=False, return_tensors="pt").input_ids.to(device)
    cache = prefill(model, ctx_ids, press)
    out = decode(model, cache, q_ids, ctx_ids.shape[1], max_new_tokens, tokenizer.eos_token_id)
    return tokenizer.decode(out, skip_special_tokens=True)
