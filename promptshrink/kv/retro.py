"""RetroAttention (Choi et al., 2025): page-sparse decoding whose past attention outputs are corrected later.

Decoding reads, per step and KV head, a budget of ``ratio`` x the cache: whole pages ranked by a Quest-style upper
bound of the query's logits (per page and channel, the larger of q x min key and q x max key), the newest partial
page always. Pages a step loads that one of the last ``retro`` queries did not see are attended by that query as
well and merged into its output by log-sum-exp (exact: the result is its attention over the union of the pages);
the corrected output then rewrites that token's residual stream and so its key and value at the next layer, before
the next layer attends.

Like Quest, the full cache is kept (the layer's ``store_keys``/``store_values``); the layer's ``keys``/``values``
are the working set the last step read, ``n_keep`` entries. The saving is the bandwidth and attention work per
step, not memory. A multi-token forward into the cache (a question fed after the prefill) attends densely.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..params import integer
from .base import BasePress, gather_tokens, hook_cache, hook_hidden
from .observation import _rotate_half
from .registry import register_press
from .routing import RoutedLayer, refuse_eager


def page_bounds(keys: torch.Tensor, page: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per full page, the channel-wise min and max key, each [batch, kv_heads, pages, dim]."""
    b, h, n, d = keys.shape
    full = keys[:, :, : n // page * page].reshape(b, h, n // page, page, d)
    return full.amin(dim=3), full.amax(dim=3)


def quest_select(
    query: torch.Tensor, keys: torch.Tensor, k: int, page: int, bounds: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """Positions [batch, kv_heads, k] (sorted) of the ``k`` entries a step loads: the newest partial page, then
    whole pages by their upper bound of ``query`` [batch, heads, dim] x key summed over the KV head's query group;
    the last page loaded may be loaded in part."""
    kmin, kmax = bounds
    b, heads, d = query.shape
    kv_heads, n = keys.shape[1], keys.shape[2]
    q = query.float().view(b, kv_heads, heads // kv_heads, 1, d)
    upper = torch.maximum(q * kmin[:, :, None].float(), q * kmax[:, :, None].float()).sum(-1).sum(2)
    rank = upper.argsort(dim=-1, descending=True).argsort(dim=-1)  # 0 = best full page
    rank = torch.cat([rank, rank.new_full((b, kv_heads, 1), -1)], dim=-1)  # the partial page first
    pos = torch.arange(n, device=keys.device)
    order = rank[:, :, pos // page] * page + pos % page  # load order of every entry
    return order.topk(k, dim=-1, largest=False).indices.sort(dim=-1).values


def attend_masked(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: float, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Output [batch, heads, dim] (fp32) and log-sum-exp [batch, heads] of one query per head over the entries
    ``mask`` [batch, kv_heads, n] allows; a head that sees nothing gets output 0 and log-sum-exp -inf."""
    b, heads, d = query.shape
    kv_heads = keys.shape[1]
    q = query.float().view(b, kv_heads, heads // kv_heads, d)
    logits = torch.einsum("bkgd,bknd->bkgn", q, keys.float()) * scaling
    if mask is not None:
        logits = logits.masked_fill(~mask[:, :, None], float("-inf"))
    lse = logits.logsumexp(dim=-1)
    weights = (logits - lse[..., None]).exp().nan_to_num(0.0)
    out = torch.einsum("bkgn,bknd->bkgd", weights, values.float())
    return out.reshape(b, heads, d), lse.reshape(b, heads)


def merge(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention over the union of two disjoint entry sets from the attention over each: log-sum-exp merging."""
    lse = torch.logaddexp(lse_a, lse_b)
    return out_a * (lse_a - lse).exp()[..., None] + out_b * (lse_b - lse).exp()[..., None], lse


@dataclass
class Past:
    """One of the last ``retro`` queries of a layer: its output so far and the entries it has seen."""

    pos: int
    query: torch.Tensor  # [batch, heads, dim]
    out: torch.Tensor  # [batch, heads, dim] fp32
    lse: torch.Tensor  # [batch, heads]
    seen: torch.Tensor  # [batch, kv_heads, pos + 1] bool
    resid: torch.Tensor | None  # the layer's input residual for this token, [batch, hidden]
    rope: tuple[torch.Tensor, torch.Tensor] | None  # cos, sin at its position, [batch, 1, 1, head_dim]


class RetroLayer(RoutedLayer):
    """The full cache of a layer (``store_keys``/``store_values``), decoded page-sparsely with retrospective
    correction; ``keys``/``values`` hold the working set of the last step."""

    def __init__(
        self,
        store: tuple[torch.Tensor, torch.Tensor],
        working: tuple[torch.Tensor, torch.Tensor],
        press: RetroAttentionPress,
        decoder: nn.Module,
    ) -> None:
        super().__init__(*working)
        self.store_keys, self.store_values = store
        self.ratio, self.page, self.retro = press.ratio, press.page, press.retro
        self.decoder = decoder
        self.bounds = page_bounds(self.store_keys, self.page)
        self.past: list[Past] = []
        self.next: RetroLayer | None = None
        self.resid: torch.Tensor | None = None  # set by the press's hook on the decoder layer, for this step
        self.rope: tuple[torch.Tensor, torch.Tensor] | None = None

    def get_seq_length(self) -> int:
        return self.store_keys.shape[-2]

    def budget(self, n: int) -> int:
        return max(1, min(n, round(n * self.ratio)))

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        before = self.store_keys.shape[-2] // self.page
        self.store_keys = torch.cat([self.store_keys, key_states], dim=-2)
        self.store_values = torch.cat([self.store_values, value_states], dim=-2)
        if self.store_keys.shape[-2] // self.page > before:  # pages completed: extend the bounds
            self.bounds = page_bounds(self.store_keys, self.page)
        return self.store_keys, self.store_values

    def attend(
        self, module: nn.Module, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: float
    ) -> torch.Tensor:
        n, q_len = keys.shape[-2], query.shape[2]
        if q_len > 1:  # a prompt continuation: dense and causal, like a prefill
            out = torch.nn.functional.scaled_dot_product_attention(
                query, keys, values, attn_mask=self._causal(n, q_len, query.device), scale=scaling, enable_gqa=True
            )
            self._load(query[:, :, -1])
            self.resid = self.rope = None
            return out.transpose(1, 2).contiguous()
        idx = self._load(query[:, :, 0])
        out, lse = attend_masked(query[:, :, 0], self.keys, self.values, scaling)
        seen = torch.zeros(keys.shape[:3], dtype=torch.bool, device=keys.device).scatter_(-1, idx, True)
        for past in self.past:
            new = seen[..., : past.pos + 1] & ~past.seen
            if not new.any():
                continue
            extra = attend_masked(past.query, keys[:, :, : past.pos + 1], values[:, :, : past.pos + 1], scaling, new)
            past.out, past.lse = merge(past.out, past.lse, *extra)
            past.seen |= new
            self._rewrite_next(module, past)
        self.past = [*self.past, Past(n - 1, query[:, :, 0], out, lse, seen, self.resid, self.rope)][-self.retro :]
        if not self.retro:
            self.past = []
        self.resid = self.rope = None
        return out.to(query.dtype)[:, None]

    def _load(self, query: torch.Tensor) -> torch.Tensor:
        """Select and gather this step's working set for ``query`` [batch, heads, dim]; its positions."""
        idx = quest_select(query, self.store_keys, self.budget(self.store_keys.shape[-2]), self.page, self.bounds)
        self.keys, self.values = gather_tokens(self.store_keys, self.store_values, idx)
        return idx

    @staticmethod
    def _causal(n: int, q_len: int, device: torch.device) -> torch.Tensor:
        return torch.arange(n, device=device)[None, :] <= (n - q_len + torch.arange(q_len, device=device))[:, None]

    def _rewrite_next(self, module: nn.Module, past: Past) -> None:
        """Carry the corrected output of ``past`` through the rest of this decoder layer into the next layer's key
        and value for that token."""
        nxt = self.next
        if nxt is None:
            return
        if past.resid is None:
            warnings.warn(
                "RetroAttention decoded without its press's hooks (pass press= to kv.decode, or decode inside "
                "`with press(model)`): past outputs are corrected but the next layers are not rewritten",
                stacklevel=2,
            )
            return
        b = past.out.shape[0]
        hidden = past.resid + module.o_proj(past.out.reshape(b, -1).to(past.resid.dtype))
        hidden = hidden + self.decoder.mlp(self.decoder.post_attention_layernorm(hidden))
        nxt.rewrite(past.pos, hidden)

    def rewrite(self, pos: int, resid: torch.Tensor) -> None:
        """Recompute this layer's key and value of the token at ``pos`` from its new input residual [batch, hidden]."""
        mine = next((p for p in self.past if p.pos == pos), None)
        if mine is None or mine.rope is None:
            return
        mine.resid = resid
        attn = self.decoder.self_attn
        x = self.decoder.input_layernorm(resid[:, None])
        key = attn.k_proj(x).view(x.shape[0], 1, -1, attn.head_dim)
        if getattr(attn, "k_norm", None) is not None:
            key = attn.k_norm(key)
        key = key.transpose(1, 2)
        cos, sin = mine.rope
        key = key * cos + _rotate_half(key) * sin
        value = attn.v_proj(x).view(x.shape[0], 1, -1, attn.head_dim).transpose(1, 2)
        self.store_keys[:, :, pos] = key[:, :, 0].to(self.store_keys.dtype)
        self.store_values[:, :, pos] = value[:, :, 0].to(self.store_values.dtype)
        if pos < self.store_keys.shape[-2] // self.page * self.page:  # in a full page: refresh the bounds
            self.bounds = page_bounds(self.store_keys, self.page)


@register_press
@dataclass
class RetroAttentionPress(BasePress):
    """Page-sparse decoding (Quest-style page bounds) with retrospective correction of the last ``retro`` outputs.

    ``ratio`` is the relative budget: the share of the cache one decode step reads (paper default 0.15). The full
    cache stays in memory. For the correction to reach the next layers, decode with ``kv.decode(..., press=p)``,
    ``kv.generate`` or inside ``with p(model)``; otherwise decoding is plain page-sparse attention (a warning
    says so). SDPA or flash attention models only.
    Reference: Choi, Kang, Jo and Kim, "Retrospective Sparse Attention for Efficient Long-Context Generation", 2025.

    Args:
        page: Tokens per page, the unit in which entries are ranked and loaded.
        retro: Past queries (w) whose outputs are kept and corrected by the pages later steps load.
    """

    name = "retro"
    summary = "Page-sparse decoding whose last outputs are corrected by later-loaded pages (RetroAttention)."
    decoding = True

    ratio: float = 0.15
    page: int = 16
    retro: int = 2
    _decoders: list[nn.Module] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("page", self.page)
        integer("retro", self.retro, 0)

    def select(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first working set: the pages the last prefill query (or the question's last) would load."""
        assert queries is not None
        idx = quest_select(queries[:, :, -1], keys, k, self.page, page_bounds(keys, self.page))
        return gather_tokens(keys, values, idx)

    @contextmanager
    def hooked(self, model: nn.Module) -> Iterator[None]:
        """The prefill hooks, and a hook on every decoder layer giving its :class:`RetroLayer` the step's input
        residual and rotary position."""
        base = getattr(model, "model", model)
        self._decoders = list(base.layers)
        handles = [d.register_forward_pre_hook(self._capture(i), with_kwargs=True) for i, d in enumerate(base.layers)]
        try:
            with super().hooked(model):
                yield
        finally:
            for h in handles:
                h.remove()

    def _capture(self, layer: int) -> Any:
        def pre_hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            cache = hook_cache(kwargs)
            if cache is None or len(cache.layers) <= layer or not isinstance(cache.layers[layer], RetroLayer):
                return
            hidden = hook_hidden(args, kwargs)
            cos, sin = kwargs["position_embeddings"]
            cache.layers[layer].resid = hidden[:, -1]
            cache.layers[layer].rope = (cos[:, None, -1:], sin[:, None, -1:])

        return pre_hook

    def _hook(self, layer: int, n_layers: int) -> Any:
        at_prefill = super()._hook(layer, n_layers)

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            cache = hook_cache(kwargs)
            if cache is None or isinstance(cache.layers[layer], RetroLayer):
                return output
            full = (cache.layers[layer].keys, cache.layers[layer].values)
            output = at_prefill(module, args, kwargs, output)
            working = (cache.layers[layer].keys, cache.layers[layer].values)
            if working[0].shape[-2] == full[0].shape[-2]:
                return output  # nothing dropped (ratio 1, or not a first prefill)
            refuse_eager(module, self.name)
            cache.layers[layer] = RetroLayer(full, working, self, self._decoders[layer])
            if layer and isinstance(cache.layers[layer - 1], RetroLayer):
                cache.layers[layer - 1].next = cache.layers[layer]
            return output

        return hook
