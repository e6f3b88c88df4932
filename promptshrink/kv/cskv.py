"""CSKV (2024): shrink the channels of the cache's older entries to a low-rank basis, training-free (ASVD).

Per layer and per sequence, the keys and the values of all KV heads ([tokens, kv_heads * head_dim]) are scaled
channel-wise by their mean absolute activation, and an SVD keeps the top ``r = round(ratio * kv_heads * head_dim)``
right singular directions (activation-aware SVD, ASVD). The calibration text is the context itself, at prefill
(the paper calibrates offline on other text). Bi-branch cache (:class:`LowRankLayer`): the last ``window``
entries stay at full rank; the older ones are stored as their rank-``r`` coefficients only, and each attention
call reads them back as ``coefficients @ basis`` with the scaling undone (a transient tensor, freed after the
call). While decoding, each entry that leaves the window is projected on its layer's prefill basis.

Left out: the paper's layer-wise reconstruction training (it fine-tunes the low-rank projections, which is what
makes densities below 0.5 usable), hence ``ratio`` >= 0.5 here. Keys are factorised after RoPE (as cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.cache_utils import DynamicLayer

from ..errors import InvalidInputError, PromptShrinkError
from ..params import integer, number
from .base import BasePress, hook_cache, hook_hidden
from .registry import register_press


def asvd_basis(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel scale [batch, channels] (mean absolute activation) and orthonormal basis [batch, channels, rank] of
    the scaled rows of ``x`` [batch, tokens, channels], in fp32."""
    x = x.float()
    scale = x.abs().mean(dim=1).clamp_min(1e-6)
    basis = torch.linalg.svd(x * scale[:, None], full_matrices=False).Vh[:, :rank].transpose(1, 2)
    return scale, basis


def to_coefficients(x: torch.Tensor, scale: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Rank-r coefficients [batch, tokens, rank] of ``x`` [batch, tokens, channels], in ``x``'s dtype: (x * s) @ B."""
    return ((x.float() * scale.float()[:, None]) @ basis.float()).to(x.dtype)


def from_coefficients(coeff: torch.Tensor, scale: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The rows [batch, tokens, channels] that ``coeff`` stands for, in its dtype: (c @ B^T) / s."""
    return ((coeff.float() @ basis.float().transpose(1, 2)) / scale.float()[:, None]).to(coeff.dtype)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """[batch, kv_heads, seq, head_dim] -> [batch, seq, kv_heads * head_dim]."""
    return t.transpose(1, 2).flatten(2)


def _heads(t: torch.Tensor, kv_heads: int) -> torch.Tensor:
    return t.unflatten(2, (kv_heads, -1)).transpose(1, 2)


class LowRankLayer(DynamicLayer):
    """A cache layer holding its first entries as rank-r coefficients of K and V (per layer, all heads) and the
    rest at full rank; attention gets the reconstruction of all of them. After each :meth:`update` the entries
    beyond the last ``window`` move to coefficients (those that arrived in it were read at full rank once).

    ``keys``/``values`` read as the whole reconstructed layer [batch, kv_heads, seq, head_dim] (a new tensor per
    read), so code that inspects a cache sees what attention sees; assigning them stores full-rank entries."""

    is_croppable = False

    def __init__(
        self, keys: torch.Tensor, values: torch.Tensor, bases: tuple[torch.Tensor, ...], old: int, window: int
    ) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        # held in the cache's dtype (bf16 on a GPU: half of fp32), computed with in fp32
        self.k_scale, self.k_basis, self.v_scale, self.v_basis = (t.to(keys.dtype) for t in bases)
        self.window, self.kv_heads = window, keys.shape[1]
        self.recent_k, self.recent_v = keys, values
        batch, rank = keys.shape[0], self.k_basis.shape[-1]
        self.k_coeff, self.v_coeff = keys.new_zeros(batch, 0, rank), values.new_zeros(batch, 0, rank)
        self._shrink(old)

    @property  # type: ignore[override]
    def keys(self) -> torch.Tensor:
        return self._whole(self.k_coeff, self.k_scale, self.k_basis, self.recent_k)

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:  # DynamicLayer's own initialisation, or a caller: full rank
        self.recent_k, self.k_coeff = value, None

    @property  # type: ignore[override]
    def values(self) -> torch.Tensor:
        return self._whole(self.v_coeff, self.v_scale, self.v_basis, self.recent_v)

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        self.recent_v, self.v_coeff = value, None

    def _whole(self, coeff: torch.Tensor | None, scale: torch.Tensor, basis: torch.Tensor, recent: Any) -> Any:
        if coeff is None or coeff.shape[1] == 0:
            return recent
        return torch.cat([_heads(from_coefficients(coeff, scale, basis), self.kv_heads), recent], dim=2)

    def _shrink(self, n: int) -> None:
        """Move the first ``n`` full-rank entries to coefficients."""
        if n <= 0:
            return
        for side in ("k", "v"):
            recent = getattr(self, f"recent_{side}")
            scale, basis = getattr(self, f"{side}_scale"), getattr(self, f"{side}_basis")
            coeff = to_coefficients(_flat(recent[:, :, :n]), scale, basis)
            before = getattr(self, f"{side}_coeff")
            setattr(self, f"{side}_coeff", coeff if before is None else torch.cat([before, coeff], dim=1))
            setattr(self, f"recent_{side}", recent[:, :, n:].contiguous())

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        self.recent_k = torch.cat([self.recent_k, key_states], dim=-2)
        self.recent_v = torch.cat([self.recent_v, value_states], dim=-2)
        whole = self.keys, self.values
        self._shrink(self.recent_k.shape[-2] - self.window)
        return whole

    def get_seq_length(self) -> int:
        return self.shrunk + self.recent_k.shape[-2]

    @property
    def shrunk(self) -> int:
        """Entries held as coefficients."""
        return 0 if self.k_coeff is None else self.k_coeff.shape[1]

    def stored_bytes(self) -> int:
        """Bytes this layer holds: coefficients, full-rank entries, bases and scales of K and V."""
        parts = (self.k_coeff, self.v_coeff, self.recent_k, self.recent_v)
        parts += (self.k_scale, self.k_basis, self.v_scale, self.v_basis)
        return sum(t.numel() * t.element_size() for t in parts if t is not None)

    def crop(self, tokens_to_remove: int) -> None:
        raise PromptShrinkError("a cskv cache layer cannot be cropped (its older entries are low-rank)")

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._per_row(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._per_row(lambda t: t[indices])

    def _per_row(self, fn: Any) -> None:
        """Apply ``fn`` to every tensor of the layer along its batch dimension (beam search, batch selection)."""
        for name in ("k_coeff", "v_coeff", "recent_k", "recent_v", "k_scale", "k_basis", "v_scale", "v_basis"):
            if getattr(self, name) is not None:
                setattr(self, name, fn(getattr(self, name)))


@register_press
@dataclass
class CSKVPress(BasePress):
    """Entries older than the last ``window`` stored as rank-r ASVD coefficients of K and V (per layer, all heads):
    each layer becomes a :class:`LowRankLayer` at prefill, which keeps shrinking while decoding.

    Every token stays; ``ratio`` is the channel density of the older entries. Training-free ASVD only (the
    paper's reconstruction training is left out), so densities below 0.5 are refused.
    Reference: Wang et al., "CSKV: Training-Efficient Channel Shrinking for KV Cache in Long-Context Scenarios",
    2024.

    Args:
        ratio: Kept / original channels of the entries older than the window (the paper's density), in [0.5, 1].
        window: Most recent entries kept at full rank (0 = none).
    """

    name = "cskv"
    summary = "Older entries stored as rank-r ASVD coefficients of K and V (all heads); the recent window at full rank."
    needs_queries = False
    evicts = False

    _bases: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict, init=False, repr=False)
    _layers: dict[int, LowRankLayer] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        number("ratio", self.ratio, 0.0, 1.0, exclusive_low=True)
        if self.ratio < 0.5:
            raise InvalidInputError(
                f"cskv ratio (density) must be >= 0.5 without the paper's layer-wise reconstruction training, "
                f"got {self.ratio!r}"
            )
        integer("window", self.window, 0)

    def n_keep(self, seq_len: int, layer: int = 0, n_layers: int = 1) -> int:
        return seq_len

    def rank(self, channels: int) -> int:
        """Rank kept for a layer of ``channels`` = kv_heads * head_dim."""
        return max(1, min(channels, round(self.ratio * channels)))

    def reset(self) -> None:
        self._bases, self._layers = {}, {}

    def compress(
        self,
        layer: int,
        n_layers: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fit the layer's bases on the context; the entries stay as they are until the hook stores the layer."""
        channels = keys.shape[1] * keys.shape[-1]
        r = self.rank(channels)
        if r < channels:
            self._bases[layer] = (*asvd_basis(_flat(keys), r), *asvd_basis(_flat(values), r))
        return keys, values

    def _hook(self, layer: int, n_layers: int) -> Any:
        at_prefill = super()._hook(layer, n_layers)

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            cache = hook_cache(kwargs)
            if cache is None or isinstance(cache.layers[layer], LowRankLayer):
                return output  # decoding: the layer shrinks what leaves its window itself
            output = at_prefill(module, args, kwargs, output)
            bases = self._bases.pop(layer, None)
            if bases is not None:  # a first prefill just fitted them: store the layer low-rank
                full = cache.layers[layer]
                hidden = hook_hidden(args, kwargs)
                old = max(0, hidden.shape[1] - self.question - self.window)
                low = LowRankLayer(full.keys, full.values, bases, old, self.window)
                cache.layers[layer] = self._layers[layer] = low
            return output

        return hook

    @property
    def stats(self) -> dict[str, int]:
        """Cache bytes of the shrunk layers as full entries and as stored (coefficients of the entries older than
        the window, full recent entries, basis and scale of K and V, all in the cache's dtype), and the
        difference."""
        full = stored = 0
        for low in self._layers.values():
            batch, kv_heads, _, dim = low.recent_k.shape
            full += 2 * batch * low.get_seq_length() * kv_heads * dim * low.recent_k.element_size()
            stored += low.stored_bytes()
        return {"full_bytes": full, "stored_bytes": stored, "saved_bytes": full - stored}
