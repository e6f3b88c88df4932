"""CSKV (2024): shrink the channels of the cache's older entries to a low-rank basis, training-free (ASVD).

Per layer and per sequence, the keys and the values of all KV heads ([tokens, kv_heads * head_dim]) are scaled
channel-wise by their mean absolute activation, and an SVD keeps the top ``r = round(ratio * kv_heads * head_dim)``
right singular directions (activation-aware SVD, ASVD). The calibration text is the context itself, at prefill
(the paper calibrates offline on other text). Bi-branch cache: the last ``window`` entries stay at full rank; the
older ones are represented by their rank-``r`` coefficients, read back as ``coefficients @ basis`` with the
scaling undone. While decoding, each entry that leaves the window is projected on its layer's prefill basis.

Left out: the paper's layer-wise reconstruction training (it fine-tunes the low-rank projections, which is what
makes densities below 0.5 usable), hence ``ratio`` >= 0.5 here. Keys are factorised after RoPE (as cached). The
cache tensors hold the reconstruction (what attention reads), so the saving is accounted in :attr:`stats`
(coefficients plus basis and scale), not freed: a cache layer storing the coefficients is not built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InvalidInputError
from ..params import integer, number
from .base import BasePress
from .registry import register_press


def asvd_basis(x: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel scale [batch, channels] (mean absolute activation) and orthonormal basis [batch, channels, rank] of
    the scaled rows of ``x`` [batch, tokens, channels], in fp32."""
    x = x.float()
    scale = x.abs().mean(dim=1).clamp_min(1e-6)
    basis = torch.linalg.svd(x * scale[:, None], full_matrices=False).Vh[:, :rank].transpose(1, 2)
    return scale, basis


def reconstruct(x: torch.Tensor, scale: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """``x`` [batch, tokens, channels] through its rank-r coefficients and back: ((x * s) @ B) @ B^T / s."""
    coeff = (x.float() * scale[:, None]) @ basis
    return ((coeff @ basis.transpose(1, 2)) / scale[:, None]).to(x.dtype)


def _flat(t: torch.Tensor) -> torch.Tensor:
    """[batch, kv_heads, seq, head_dim] -> [batch, seq, kv_heads * head_dim]."""
    return t.transpose(1, 2).flatten(2)


def _heads(t: torch.Tensor, kv_heads: int) -> torch.Tensor:
    return t.unflatten(2, (kv_heads, -1)).transpose(1, 2)


@register_press
@dataclass
class CSKVPress(BasePress):
    """Entries older than the last ``window`` stored as rank-r ASVD coefficients of K and V (per layer, all heads).

    Every token stays; ``ratio`` is the channel density of the older entries. Training-free ASVD only (the
    paper's reconstruction training is left out), so densities below 0.5 are refused.
    Reference: Wang et al., "CSKV: Training-Efficient Channel Shrinking for KV Cache in Long-Context Scenarios",
    2024.

    Args:
        ratio: Kept / original channels of the entries older than the window (the paper's density), in [0.5, 1].
        window: Most recent entries kept at full rank (0 = none).
    """

    name = "cskv"
    summary = "Older entries shrunk to rank-r ASVD coefficients of K and V (all heads); the recent window at full rank."
    needs_queries = False
    decoding = True
    evicts = False

    _bases: dict[int, tuple[torch.Tensor, ...]] = field(default_factory=dict, init=False, repr=False)
    _done: dict[int, int] = field(default_factory=dict, init=False, repr=False)
    _sizes: dict[int, tuple[int, int, int, int]] = field(default_factory=dict, init=False, repr=False)
    _seq: dict[int, int] = field(default_factory=dict, init=False, repr=False)

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
        self._bases, self._done, self._sizes, self._seq = {}, {}, {}, {}

    def compress(
        self,
        layer: int,
        n_layers: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        kv_heads, seq = keys.shape[1], keys.shape[-2]
        channels = kv_heads * keys.shape[-1]
        r = self.rank(channels)
        if r >= channels:
            return keys, values
        k_scale, k_basis = asvd_basis(_flat(keys), r)
        v_scale, v_basis = asvd_basis(_flat(values), r)
        self._bases[layer] = (k_scale, k_basis, v_scale, v_basis)
        self._sizes[layer] = (keys.shape[0], channels, r, keys.element_size())
        self._done[layer], self._seq[layer] = 0, seq
        return self._project(layer, keys, values, max(0, seq - self.window))

    def _project(self, layer: int, keys: torch.Tensor, values: torch.Tensor, upto: int) -> tuple[torch.Tensor, ...]:
        """Keys and values with entries ``_done[layer]`` to ``upto`` replaced by their reconstruction."""
        start = self._done[layer]
        if upto <= start:
            return keys, values
        k_scale, k_basis, v_scale, v_basis = self._bases[layer]
        kv_heads = keys.shape[1]
        old_k = _heads(reconstruct(_flat(keys[:, :, start:upto]), k_scale, k_basis), kv_heads)
        old_v = _heads(reconstruct(_flat(values[:, :, start:upto]), v_scale, v_basis), kv_heads)
        self._done[layer] = upto
        keys = torch.cat([keys[:, :, :start], old_k, keys[:, :, upto:]], dim=2)
        values = torch.cat([values[:, :, :start], old_v, values[:, :, upto:]], dim=2)
        return keys, values

    def _hook(self, layer: int, n_layers: int) -> Any:
        at_prefill = super()._hook(layer, n_layers)

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            hidden = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            if cache is None:
                return output
            cache_layer, q_len = cache.layers[layer], hidden.shape[1]
            if q_len >= 2 and cache_layer.keys.shape[-2] == q_len:  # a first prefill
                output = at_prefill(module, args, kwargs, output)
                if layer in self._seq:  # with a question-aware prefill's question
                    self._seq[layer] = cache_layer.keys.shape[-2]
                return output
            if layer in self._bases:  # decoding: project the entries that left the window
                n = self._seq[layer] = cache_layer.keys.shape[-2]
                k, v = self._project(layer, cache_layer.keys, cache_layer.values, max(0, n - self.window))
                cache_layer.keys, cache_layer.values = k.contiguous(), v.contiguous()
            return output

        return hook

    @property
    def stats(self) -> dict[str, int]:
        """Cache bytes of the shrunk layers as full entries and as stored (coefficients of the entries older than
        the window, full recent entries, fp32 basis and scale of K and V), and the difference."""
        full = stored = 0
        for layer, (batch, channels, r, size) in self._sizes.items():
            old, n = self._done[layer], self._seq[layer]
            full += 2 * batch * n * channels * size
            stored += 2 * batch * ((n - old) * channels * size + old * r * size + (channels * r + channels) * 4)
        return {"full_bytes": full, "stored_bytes": stored, "saved_bytes": full - stored}
