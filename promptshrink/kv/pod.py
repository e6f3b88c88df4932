"""Inter-layer attention similarity (PoD, Ma et al., 2024), training-free: layer groups share one token selection.

Adjacent layers attend to distant tokens alike, so a group of them can share one decision about those tokens. Groups
are found offline (:func:`find_layer_groups`: the window attention of each layer on sample text, the similarity of
adjacent layers' attention, contiguous groups maximising it); within a group the first layer ranks the distant
tokens by its window attention (per KV head), and every layer of the group keeps those same distant tokens, plus its
own most recent ``recent`` tokens in full.

What the training-free variant loses against the paper: PoD post-trains the model so that the layers of a group
reuse the first layer's attention *scores* over distant tokens, which lets them drop their own distant keys; here
each layer still computes attention with its own keys over the shared selection, so the saving is only the one of
any ``ratio`` eviction, and the shared selection is the leader's guess of what the other layers need (no
adaptation); the groups must be found per model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import InvalidInputError
from ..params import integer
from .base import BasePress, gather_tokens, hook_cache, hook_hidden
from .observation import attention_modules, window_attention, window_queries
from .registry import register_press


@register_press
@dataclass
class PoDPress(BasePress):
    """Per layer, its last ``recent`` tokens plus the distant tokens its group's first layer selected.

    Reference: Ma et al., "Compressing KV Cache for Long-Context LLM Inference with Inter-Layer Attention
    Similarity" (PoD), 2024; training-free (the paper post-trains to share attention scores).

    Args:
        recent: Most recent context tokens every layer keeps for itself (query-agnostic mode: the window's).
        groups: First layer of each group of layers sharing a selection, ascending from 0
            (``find_layer_groups``); None = groups of two adjacent layers.
    """

    name = "pod"
    summary = "Layer groups share one selection of distant tokens; each layer keeps its own recent tokens."

    recent: int = 32
    groups: tuple[int, ...] | None = None
    _shared: torch.Tensor | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("recent", self.recent, 0)
        if self.groups is not None:
            if not isinstance(self.groups, (tuple, list)) or not self.groups:
                raise InvalidInputError(f"groups must be a tuple of first layers, got {self.groups!r}")
            starts = [integer("groups", g, 0) for g in self.groups]
            if starts[0] != 0 or starts != sorted(set(starts)):
                raise InvalidInputError(f"groups must ascend from layer 0 without repeats, got {self.groups!r}")
            self.groups = tuple(starts)

    def reset(self) -> None:
        self._shared = None

    def leads(self, layer: int) -> bool:
        """Whether ``layer`` starts a group (it selects; the group's other layers reuse its selection)."""
        return layer in self.groups if self.groups is not None else layer % 2 == 0

    def select(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        seq = keys.shape[-2]
        recent = min(self.recent if self.causal else 0, k)
        if self.leads(layer) or self._shared is None or self._shared.shape[-1] != k - recent:
            assert queries is not None
            scores = window_attention(queries, keys, scaling, self.causal).sum(dim=3).mean(dim=2)
            distant = scores[..., : seq - recent] if recent else scores
            self._shared = distant.topk(k - recent, dim=-1).indices.sort(dim=-1).values
        tail = torch.arange(seq - recent, seq, device=keys.device).expand(*self._shared.shape[:2], -1)
        return gather_tokens(keys, values, torch.cat([self._shared, tail], dim=-1))


@torch.no_grad()
def layer_similarity(model: nn.Module, batches: Iterable[torch.Tensor], window: int = 32) -> torch.Tensor:
    """Similarity [layers - 1] of each layer's window attention to the next layer's, on ``batches`` of input ids:
    1 - the Jensen-Shannon divergence (in bits) of their attention distributions, averaged over queries and
    heads."""
    modules = attention_modules(model)
    attn: list[list[torch.Tensor]] = [[] for _ in modules]

    def make_hook(i: int):  # noqa: ANN202 - torch hook signature
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: object) -> None:
            hidden = hook_hidden(args, kwargs)
            q = window_queries(module, hidden, kwargs["position_embeddings"], min(window, hidden.shape[1]))
            keys = hook_cache(kwargs).layers[i].keys
            attn[i].append(window_attention(q, keys, module.scaling).flatten(1, 2).float().cpu())

        return hook

    handles = [m.register_forward_hook(make_hook(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        from .pipeline import cache_kwarg, new_cache

        for ids in batches:
            model(
                input_ids=ids.to(next(model.parameters()).device), use_cache=True, **{cache_kwarg(model): new_cache()}
            )
    finally:
        for h in handles:
            h.remove()
    per_layer = [torch.cat(a, dim=2) for a in attn]  # [batch, heads, queries, seq]
    sims = []
    for p, q in zip(per_layer, per_layer[1:]):
        m = (p + q) / 2
        kl = lambda a, b: (a * (a.clamp_min(1e-12) / b.clamp_min(1e-12)).log2()).sum(-1)  # noqa: E731
        sims.append(float(1 - ((kl(p, m) + kl(q, m)) / 2).mean()))
    return torch.tensor(sims)


def find_layer_groups(similarity: torch.Tensor, n_groups: int) -> tuple[int, ...]:
    """First layers of ``n_groups`` contiguous groups: cut between the least similar adjacent layers."""
    n_layers = similarity.numel() + 1
    integer("n_groups", n_groups)
    if n_groups > n_layers:
        raise InvalidInputError(f"n_groups ({n_groups}) exceeds the number of layers ({n_layers})")
    cuts = similarity.argsort()[: n_groups - 1] + 1  # cut before layer i+1 where layers i, i+1 differ most
    return (0, *sorted(int(c) for c in cuts))
