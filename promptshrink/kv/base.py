"""The press interface: compress one layer's KV cache after prefill, per head.

A press is applied either inside a forward hook on every attention module (``with press(model): ...``) or
directly on cached tensors (``press.compress``) between prefill and decode; both give the same cache, because a
layer's cache does not feed later layers during prefill.

Two modes. Query-agnostic (default): the prefill holds only the context, the observation window is its last
``window`` tokens, and the question comes later (the cache can serve any question). Question-aware
(``with press(model, question_len=n)``): the prefill ends with an ``n``-token question; the press compresses only
the context before it, scores with the question's queries as the window, and the question's entries always stay.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from ..params import integer, number
from .observation import attention_modules, window_queries


def hook_hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states [batch, q_len, hidden] an attention module's forward hook was called with."""
    return kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]


def hook_cache(kwargs: dict) -> Any:
    """The cache an attention module's forward hook was called with (``cache`` or, in older transformers,
    ``past_key_values``), or None."""
    return kwargs.get("cache", kwargs.get("past_key_values"))


def is_first_prefill(cache_layer: Any, q_len: int) -> bool:
    """Whether a forward of ``q_len`` >= 2 tokens filled ``cache_layer`` from empty (not a chunk appended to a
    cache, not a decoding step): what a prefill press compresses."""
    return q_len >= 2 and cache_layer.keys is not None and cache_layer.keys.shape[-2] == q_len


@dataclass
class BasePress:
    """Keep a fraction ``ratio`` (kept / original) of each layer's KV entries.

    A press is a ``@register_press``-ed ``@dataclass`` subclass with ``name`` and ``summary``: its parameters are
    fields checked in ``__post_init__`` (call ``super().__post_init__()``) with the validators of
    `promptshrink.params` and described in the ``Args:`` section of its docstring. Subclasses implement
    :meth:`select` (or override :meth:`compress`); ``needs_queries`` tells the hook whether to recompute window
    queries. ``question`` (set by ``press(model, question_len=n)``, 0 = query-agnostic) is the length of the
    question that follows the keys given to :meth:`compress`: the queries are then the question's, which see every
    key (no causal mask), and no context token needs protecting as part of the window.

    Args:
        ratio: Kept / original entries of each layer's cache, in (0, 1]; 1 keeps everything.
        window: Last prefill queries the press may look at (the observation window, query-agnostic mode).
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    needs_queries: ClassVar[bool] = True
    decoding: ClassVar[bool] = False  # acts during decoding too: the pipeline keeps its hooks on while decoding
    evicts: ClassVar[bool] = True  # drops entries (n_keep < seq); False: keeps every token, shrinks them otherwise

    ratio: float = 0.5
    window: int = 32
    question: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        number("ratio", self.ratio, 0.0, 1.0, exclusive_low=True)
        integer("window", self.window)

    @classmethod
    def for_model(cls, model: nn.Module | None = None, **kwargs: Any) -> BasePress:
        """An instance for ``model``; presses that need per-model data (Q-Filters) load it here."""
        return cls(**kwargs)

    def n_keep(self, seq_len: int, layer: int = 0, n_layers: int = 1) -> int:
        """Entries kept per head for a layer of ``seq_len`` tokens."""
        return max(1, min(seq_len, round(seq_len * self.ratio)))

    @property
    def observed(self) -> int:
        """Number of trailing prefill tokens whose queries the press sees: the question if any, else the window."""
        return self.question or self.window

    @property
    def causal(self) -> bool:
        """Whether the window queries are the last keys' own tokens (query-agnostic) rather than a later question."""
        return not self.question

    def reset(self) -> None:
        """Forget per-prefill state (e.g. indices shared between layers)."""

    def finish(self, model: nn.Module, input_ids: torch.Tensor, cache: Any, question_len: int = 0) -> Any:
        """The cache after a prefill of ``input_ids`` with this press (``kv.prefill`` calls it; default: as is).
        A press that rebuilds the kept entries (REFORM's recompute) returns the new cache."""
        return cache

    def compress(
        self,
        layer: int,
        n_layers: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the kept (keys, values), each [batch, kv_heads, kept, head_dim].

        ``queries`` are the post-RoPE queries of the last :attr:`observed` prefill tokens,
        [batch, heads, observed, head_dim].
        """
        k = self.n_keep(keys.shape[-2], layer, n_layers)
        if k >= keys.shape[-2]:
            return keys, values
        return self.select(layer, keys, values, queries, scaling, k)

    def select(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keep ``k`` < seq entries per head (``compress`` has handled the nothing-to-drop case)."""
        raise NotImplementedError

    @contextmanager
    def __call__(self, model: nn.Module, question_len: int = 0) -> Iterator[None]:
        """Compress the cache of every prefill (a forward of more than one token into an empty cache).

        ``question_len`` > 0: question-aware mode, the last ``question_len`` prefill tokens are the question (the
        observation window, kept whole); ``ratio`` applies to the context before it.
        """
        integer("question_len", question_len, 0)
        self.reset()
        self.question = question_len
        try:
            with self.hooked(model):
                yield
        finally:
            self.question = 0

    @contextmanager
    def hooked(self, model: nn.Module) -> Iterator[None]:
        """The press's hooks on every attention module, without resetting its state (decoding with a
        :attr:`decoding` press after its prefill: ``kv.decode``/``kv.greedy`` given the press use this)."""
        modules = attention_modules(model)
        handles = [
            m.register_forward_hook(self._hook(i, len(modules)), with_kwargs=True) for i, m in enumerate(modules)
        ]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def _hook(self, layer: int, n_layers: int) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            hidden, cache = hook_hidden(args, kwargs), hook_cache(kwargs)
            q_len = hidden.shape[1]
            n_ctx = q_len - self.question
            if cache is None or n_ctx < 1:
                return output
            cache_layer = cache.layers[layer]
            if not is_first_prefill(cache_layer, q_len):
                return output  # chunked prefill or question appended: leave the cache alone
            if layer == 0:
                self.reset()
            queries = (
                window_queries(module, hidden, kwargs["position_embeddings"], self.observed)
                if self.needs_queries
                else None
            )
            keys, values = cache_layer.keys, cache_layer.values
            k, v = self.compress(layer, n_layers, keys[:, :, :n_ctx], values[:, :, :n_ctx], queries, module.scaling)
            cache_layer.keys = torch.cat([k, keys[:, :, n_ctx:]], dim=2).contiguous()
            cache_layer.values = torch.cat([v, values[:, :, n_ctx:]], dim=2).contiguous()
            return output

        return hook


@dataclass
class ScorerPress(BasePress):
    """Keep, per KV head, the entries with the highest :meth:`score`.

    Args:
        protect: Last tokens that always stay (query-agnostic mode only: in question-aware mode the protected
            window is the question itself).
    """

    protect: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("protect", self.protect, 0)

    def score(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor | None, scaling: float
    ) -> torch.Tensor:
        """Importance of each entry, [batch, kv_heads, seq]."""
        raise NotImplementedError

    def select(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        scores = self.score(layer, keys, values, queries, scaling).float()
        if self.protect and self.causal:
            scores[..., -self.protect :] = torch.finfo(scores.dtype).max
        idx = scores.topk(k, dim=-1).indices.sort(dim=-1).values
        return gather_tokens(keys, values, idx)


def gather_tokens(keys: torch.Tensor, values: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather entries along the sequence: ``idx`` is [batch, kv_heads, kept] or [batch, kept] (shared by heads)."""
    if idx.dim() == 2:
        idx = idx[:, None].expand(-1, keys.shape[1], -1)
    full = idx[..., None].expand(-1, -1, -1, keys.shape[-1])
    return keys.gather(2, full), values.gather(2, full)
