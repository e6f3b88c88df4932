"""REFORM (2025): compress, gather, recompute: pick context tokens by Q/K/V embedding similarity, rebuild their cache.

Every context token gets an embedding from a few KV heads' pre-RoPE query (the mean of the head's query group),
key and value at one middle layer; the query is the mean embedding of the question (question-aware) or of the
context's last ``window`` tokens. A token's score is its cosine similarity to the query, summed over the heads and
max-pooled over ``kernel`` neighbours; the top tokens, the first ``sink`` and (query-agnostic) the last ``recent``
are gathered, the same for every layer and head. Only the layers up to the embedding layer decide (early exit:
:func:`token_similarity` is all a selection needs, and the text method ``reform`` runs only that deep). The
gathered tokens' cache is then recomputed by a forward over them alone at their original positions
(``kv.prefill``/``kv.generate`` do this step; inside ``with press(model)`` the gathered entries are kept as
prefilled). The question's entries stay as prefilled.

Not built (the GPU work of issue 22): the paper's chunked prefill with a recurrently compressed cache, which bounds
peak prefill memory; here the prefill runs whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..params import flag, integer, number
from .base import BasePress, gather_tokens, hook_cache, hook_hidden, is_first_prefill
from .registry import register_press


def qkv_embeddings(module: nn.Module, hidden: torch.Tensor, heads: tuple[int, ...] | None) -> torch.Tensor:
    """Per token and KV head, the pre-RoPE [mean query of the group, key, value], each L2-normalised:
    [batch, heads, seq, 3 x head_dim] for the KV heads ``heads`` (None: all)."""
    b, n, _ = hidden.shape
    d = module.head_dim
    q = module.q_proj(hidden).view(b, n, -1, d)
    k = module.k_proj(hidden).view(b, n, -1, d)
    if getattr(module, "q_norm", None) is not None:
        q, k = module.q_norm(q), module.k_norm(k)
    v = module.v_proj(hidden).view(b, n, -1, d)
    kv_heads = k.shape[2]
    q = q.view(b, n, kv_heads, -1, d).mean(dim=3)
    emb = torch.cat([F.normalize(t.float(), dim=-1) for t in (q, k, v)], dim=-1).transpose(1, 2)
    if heads is not None:
        if max(heads) >= kv_heads:
            raise InvalidInputError(f"heads {heads} name a KV head beyond the model's {kv_heads}")
        emb = emb[:, list(heads)]
    return emb


def token_similarity(emb: torch.Tensor, n_query: int, kernel: int, context: int) -> torch.Tensor:
    """Cosine similarity [batch, context] of each of the first ``context`` tokens' embeddings to the mean embedding
    of the last ``n_query`` tokens, summed over heads and max-pooled over ``kernel`` neighbours."""
    query = F.normalize(emb[:, :, -n_query:].mean(dim=2, keepdim=True), dim=-1)
    sim = (F.normalize(emb[:, :, :context], dim=-1) * query).sum(-1).sum(1)
    return F.max_pool1d(sim[:, None], kernel, stride=1, padding=kernel // 2)[:, 0]


@register_press
@dataclass
class ReformPress(BasePress):
    """Tokens gathered by Q/K/V-embedding similarity to the query at one middle layer, shared by all layers and
    heads, plus the first and last ones; their cache is recomputed (``kv.prefill``/``kv.generate``).

    Reference: "REFORM: Compress, Gather, and Recompute" (efficient long-context processing), 2025.

    Args:
        depth: Relative depth in [0, 1] of the layer whose heads give the embeddings (0 = first, 1 = last).
        heads: KV heads of that layer whose Q/K/V form the embeddings; None = all of them.
        kernel: Odd number of neighbouring tokens the similarity is max-pooled over.
        sink: First context tokens always gathered.
        recent: Last context tokens always gathered (query-agnostic mode).
        recompute: Recompute the gathered tokens' cache by a forward over them alone (else keep it as prefilled).
    """

    name = "reform"
    summary = "Gather tokens by Q/K/V-embedding similarity to the query at a middle layer, then recompute them."
    needs_queries = False

    depth: float = 0.5
    heads: tuple[int, ...] | None = None
    kernel: int = 5
    sink: int = 4
    recent: int = 32
    recompute: bool = True
    _idx: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        number("depth", self.depth, 0.0, 1.0)
        if self.heads is not None:
            if not isinstance(self.heads, (tuple, list)) or not self.heads:
                raise InvalidInputError(f"heads must be a tuple of KV head ids, got {self.heads!r}")
            self.heads = tuple(integer("heads", h, 0) for h in self.heads)
        if integer("kernel", self.kernel) % 2 == 0:
            raise InvalidInputError(f"kernel must be odd (pooling keeps the sequence length), got {self.kernel}")
        integer("sink", self.sink, 0)
        integer("recent", self.recent, 0)
        flag("recompute", self.recompute)

    def reset(self) -> None:
        self._idx = None

    def embed_layer(self, n_layers: int) -> int:
        return round(self.depth * (n_layers - 1))

    def gather(self, module: nn.Module, hidden: torch.Tensor, n_ctx: int, k: int) -> torch.Tensor:
        """Sorted context positions [batch, k] to keep, from the attention input ``hidden`` of the embedding layer."""
        n_query = hidden.shape[1] - n_ctx if self.question else min(self.window, n_ctx)
        sim = token_similarity(qkv_embeddings(module, hidden, self.heads), n_query, self.kernel, n_ctx)
        edges = torch.zeros(n_ctx, dtype=torch.bool, device=sim.device)
        edges[: self.sink] = True
        if self.causal and self.recent:
            edges[-self.recent :] = True
        sim = sim.masked_fill(edges, float("inf"))
        return sim.topk(k, dim=-1).indices.sort(dim=-1).values

    def _hook(self, layer: int, n_layers: int) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            hidden = hook_hidden(args, kwargs)
            cache = hook_cache(kwargs)
            q_len = hidden.shape[1]
            n_ctx = q_len - self.question
            if cache is None or n_ctx < 1 or not is_first_prefill(cache.layers[layer], q_len):
                return output
            if layer == 0:
                self.reset()
            k = self.n_keep(n_ctx, layer, n_layers)
            chosen = self.embed_layer(n_layers)
            if k >= n_ctx or layer < chosen:
                return output  # nothing to drop, or compressed once the embedding layer has chosen
            if layer == chosen:
                self._idx = self.gather(module, hidden, n_ctx, k)
            for i in range(chosen + 1) if layer == chosen else (layer,):
                keys, values = cache.layers[i].keys, cache.layers[i].values
                kept_k, kept_v = gather_tokens(keys[:, :, :n_ctx], values[:, :, :n_ctx], self._idx)
                cache.layers[i].keys = torch.cat([kept_k, keys[:, :, n_ctx:]], dim=2).contiguous()
                cache.layers[i].values = torch.cat([kept_v, values[:, :, n_ctx:]], dim=2).contiguous()
            return output

        return hook

    def finish(self, model: nn.Module, input_ids: torch.Tensor, cache: Any, question_len: int = 0) -> Any:
        """Recompute the gathered tokens' cache: a forward over them alone, at their original positions; the
        question's entries (question-aware) are appended as prefilled."""
        if not self.recompute or self._idx is None:
            return cache
        from .pipeline import cache_kwarg, new_cache

        idx, fresh = self._idx, new_cache()
        with torch.no_grad():
            model(
                input_ids=input_ids.gather(1, idx),
                position_ids=idx,
                use_cache=True,
                logits_to_keep=1,
                **{cache_kwarg(model): fresh},
            )
        k = idx.shape[1]
        for old, new in zip(cache.layers, fresh.layers):
            new.keys = torch.cat([new.keys, old.keys[:, :, k:]], dim=2).contiguous()
            new.values = torch.cat([new.values, old.values[:, :, k:]], dim=2).contiguous()
        return fresh
