"""Prefill with a press, then decode on the compressed cache with explicit positions."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from .base import BasePress
from .registry import make_press


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


def decoding_hooks(model: nn.Module, press: BasePress | None) -> Any:
    """The hooks of a press that acts during decoding (``press.decoding``), else nothing."""
    return press.hooked(model) if press is not None and press.decoding else nullcontext()


@torch.no_grad()
def prefill_logits(
    model: nn.Module, input_ids: torch.Tensor, press: BasePress | None = None, question_len: int = 0
) -> tuple[Any, torch.Tensor]:
    """Run the prompt through the model (press applied) and return its cache and the last position's logits
    [batch, 1, vocab]; ``question_len`` > 0 makes the press question-aware (see :meth:`BasePress.__call__`)."""
    cache = new_cache()
    with press(model, question_len=question_len) if press is not None else nullcontext():
        out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
    if press is not None:
        cache = press.finish(model, input_ids, cache, question_len)
    return cache, out.logits


def prefill(model: nn.Module, input_ids: torch.Tensor, press: BasePress | None = None, question_len: int = 0) -> Any:
    """Run the prompt through the model (press applied) and return its cache."""
    return prefill_logits(model, input_ids, press, question_len)[0]


@torch.no_grad()
def step(model: nn.Module, cache: Any, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Logits [batch, len, vocab] for ``ids`` at absolute positions ``start...``, appended to ``cache``."""
    pos = torch.arange(start, start + ids.shape[1], device=ids.device)[None].expand(ids.shape[0], -1)
    out = model(input_ids=ids, position_ids=pos, use_cache=True, **{cache_kwarg(model): cache})
    return out.logits


@torch.no_grad()
def forward_tokens(model: nn.Module, cache: Any, ids: torch.Tensor, start: int) -> torch.Tensor:
    """Like :func:`step`, but one token at a time under SDPA when the layers hold different lengths."""
    if uniform(cache):
        return step(model, cache, ids, start)
    with sdpa_attention(model):
        return torch.cat([step(model, cache, t, start + i) for i, t in enumerate(ids.split(1, dim=1))], dim=1)


@torch.no_grad()
def decode(
    model: nn.Module,
    cache: Any,
    prompt_ids: torch.Tensor,
    start: int,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    press: BasePress | None = None,
) -> list[int]:
    """Greedy decoding: feed ``prompt_ids`` (one token at a time when layer lengths differ), then generate.

    ``press``: the press the cache was prefilled with; one that acts during decoding (``press.decoding``, e.g.
    ``decoding``) keeps its hooks on while the prompt is fed and the tokens are generated."""
    with decoding_hooks(model, press):
        logits = forward_tokens(model, cache, prompt_ids, start)
    return greedy(model, cache, logits, start + prompt_ids.shape[1], max_new_tokens, eos_token_id, press)


@torch.no_grad()
def greedy(
    model: nn.Module,
    cache: Any,
    logits: torch.Tensor,
    start: int,
    max_new_tokens: int,
    eos_token_id: int | None = None,
    press: BasePress | None = None,
) -> list[int]:
    """Greedy tokens from ``logits`` [batch, len, vocab] of the position before ``start``, extending ``cache``.

    ``start`` is the absolute position of the next token (the uncompressed prompt length), not the cache length.
    ``press``: as in :func:`decode`.
    """
    with nullcontext() if uniform(cache) else sdpa_attention(model), decoding_hooks(model, press):
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(int(nxt[0, 0]))
            if len(out) == max_new_tokens or (eos_token_id is not None and out[-1] == eos_token_id):
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
    question_aware: bool = False,
) -> str:
    """Answer ``question`` about ``context`` greedily; only the context's cache is compressed (``ratio`` of it kept).

    ``question_aware=False`` (default, query-agnostic, as a cache reused across questions): the context alone is
    prefilled and compressed with its last ``window`` tokens as the observation window; the question is fed after.
    ``question_aware=True``: context and question are prefilled together; the press scores the context with the
    question's queries as the window and never evicts the question. The first answer token comes from the
    uncompressed prefill, the following ones from the compressed cache.
    """
    if isinstance(press, str):
        press = make_press(press, ratio=ratio, model=model)
    device = next(model.parameters()).device
    ctx_ids = tokenizer(context, return_tensors="pt").input_ids.to(device)
    q_ids = tokenizer(question or "\n", add_special_tokens=False, return_tensors="pt").input_ids.to(device)
    if question_aware:
        ids = torch.cat([ctx_ids, q_ids], dim=1)
        cache, logits = prefill_logits(model, ids, press, q_ids.shape[1])
        out = greedy(model, cache, logits, ids.shape[1], max_new_tokens, tokenizer.eos_token_id, press)
    else:
        cache = prefill(model, ctx_ids, press)
        out = decode(model, cache, q_ids, ctx_ids.shape[1], max_new_tokens, tokenizer.eos_token_id, press)
    return tokenizer.decode(out, skip_special_tokens=True)
