"""FreqKV (2025): compress the cache in the frequency domain along the sequence, training-free.

When a layer's cache fills, its first ``sink`` entries stay and the rest is low-passed: a DCT-II along the sequence,
the lowest ``n_keep - sink`` coefficients kept, and an inverse DCT of that length, which resamples the smoothed
keys and values on as many evenly spaced points. Keys are handled before RoPE: the rotation of every entry is
undone at its position, the pre-RoPE keys are compressed, and each resampled key is rotated again at its resampled
(fractional) position, so later queries see consistent relative positions. After prefill the cache is compressed
to ``n_keep``; while decoding it is compressed back to that size every time ``interval`` more entries arrived
(earlier compressed entries are compressed again with the new ones, as in the paper).

Training-free: the paper fine-tunes briefly so the model adapts to the smoothed cache; without it the resampled
entries also take less attention mass in total than the entries they replace (fewer of them, no compensation).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError
from ..params import integer
from .base import BasePress, hook_cache, hook_hidden, is_first_prefill
from .observation import _rotate_half
from .registry import register_press


def dct_resample(x: torch.Tensor, m: int) -> torch.Tensor:
    """Low-pass ``x`` [..., n] to its ``m`` lowest orthonormal DCT-II coefficients and take the inverse DCT of
    length ``m``, scaled by sqrt(m / n) so amplitudes are kept: [..., m], in fp32 (FFT-based, O(n log n))."""
    n = x.shape[-1]
    x = x.float()
    k = torch.arange(n, device=x.device)
    spectrum = torch.fft.fft(torch.cat([x, x.flip(-1)], dim=-1))[..., :n]
    coeff = (spectrum * torch.exp(-1j * math.pi * k / (2 * n))).real / 2  # sum_j x_j cos(pi k (2j + 1) / 2n)
    coeff = coeff * torch.where(k == 0, math.sqrt(1 / n), math.sqrt(2 / n))
    low = coeff[..., :m] * math.sqrt(m / n)
    j = torch.arange(m, device=x.device)
    weighted = low * torch.where(j == 0, math.sqrt(1 / m), math.sqrt(2 / m)) * torch.exp(1j * math.pi * j / (2 * m))
    return (torch.fft.ifft(weighted, n=2 * m) * (2 * m)).real[..., :m]


@register_press
@dataclass
class FreqKVPress(BasePress):
    """Sinks plus a DCT low-pass of the rest (keys before RoPE), resampled to ``n_keep`` entries; repeated every
    ``interval`` entries while decoding.

    Works with models whose attention has a rotary embedding at ``model.model.rotary_emb`` (Llama, Mistral, Qwen);
    the entries' positions are tracked per layer (fractional after a compression).
    Reference: Kai et al., "FreqKV: Frequency Domain Key-Value Compression for Efficient Context Window
    Extension", 2025.

    Args:
        sink: First entries (attention sinks) kept exactly.
        interval: Entries appended while decoding before a layer is compressed back to its size after prefill;
            0 = compress the prefill only.
    """

    name = "freqkv"
    summary = "Sinks plus a DCT low-pass of the rest along the sequence (keys before RoPE), repeated as it refills."
    needs_queries = False
    decoding = True

    sink: int = 4
    interval: int = 256
    _rotary: nn.Module | None = field(default=None, init=False, repr=False)
    _positions: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False)
    _targets: dict[int, int] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        integer("sink", self.sink, 0)
        integer("interval", self.interval, 0)

    @classmethod
    def for_model(cls, model: nn.Module | None = None, **kwargs: Any) -> FreqKVPress:
        press = cls(**kwargs)
        if model is not None:
            press._rotary = rotary_of(model)
        return press

    def reset(self) -> None:
        self._positions, self._targets = {}, {}

    @contextmanager
    def hooked(self, model: nn.Module) -> Iterator[None]:
        self._rotary = rotary_of(model)
        with super().hooked(model):
            yield

    def select(
        self,
        layer: int,
        keys: torch.Tensor,
        values: torch.Tensor,
        queries: torch.Tensor | None,
        scaling: float,
        k: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The prefill's compression (context positions 0...seq-1)."""
        pos = torch.arange(keys.shape[-2], device=keys.device, dtype=torch.float32)
        keys, values, self._positions[layer] = self.squeeze(keys, values, pos, k)
        return keys, values

    def squeeze(
        self, keys: torch.Tensor, values: torch.Tensor, pos: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep the sinks, resample the rest to ``k - sinks`` entries; the new keys, values and positions."""
        if self._rotary is None:
            raise InvalidInputError("freqkv needs the model's rotary embedding: make_press('freqkv', model=m)")
        sink = min(self.sink, k - 1)
        m = k - sink
        rest_k, rest_v, rest_pos = keys[:, :, sink:], values[:, :, sink:], pos[sink:]
        cos, sin = self._rope(rest_pos, keys)
        pre = (rest_k.float() * cos - _rotate_half(rest_k.float()) * sin) / (cos.square() + sin.square())
        new_k = dct_resample(pre.transpose(2, 3), m).transpose(2, 3)
        new_v = dct_resample(rest_v.transpose(2, 3), m).transpose(2, 3)
        new_pos = F.interpolate(rest_pos[None, None], size=m, mode="linear", align_corners=False)[0, 0]
        cos, sin = self._rope(new_pos, keys)
        new_k = new_k * cos + _rotate_half(new_k) * sin
        return (
            torch.cat([keys[:, :, :sink], new_k.to(keys.dtype)], dim=2),
            torch.cat([values[:, :, :sink], new_v.to(values.dtype)], dim=2),
            torch.cat([pos[:sink], new_pos]),
        )

    def _rope(self, pos: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [1, 1, len, head_dim] (fp32) of the model's rotary embedding at (fractional) positions."""
        assert self._rotary is not None
        cos, sin = self._rotary(like.float(), pos.float()[None])
        return cos.float()[:, None], sin.float()[:, None]

    def _hook(self, layer: int, n_layers: int) -> Any:
        at_prefill = super()._hook(layer, n_layers)

        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            hidden = hook_hidden(args, kwargs)
            cache = hook_cache(kwargs)
            if cache is None:
                return output
            cache_layer, q_len = cache.layers[layer], hidden.shape[1]
            if is_first_prefill(cache_layer, q_len):
                output = at_prefill(module, args, kwargs, output)
                n = cache_layer.keys.shape[-2]
                if layer not in self._positions:  # not compressed: the positions as they are
                    self._positions[layer] = torch.arange(n, device=hidden.device, dtype=torch.float32)
                else:  # a question kept after the compressed context
                    start = q_len - self.question
                    extra = torch.arange(start, q_len, device=hidden.device, dtype=torch.float32)
                    self._positions[layer] = torch.cat([self._positions[layer], extra])
                self._targets[layer] = n
                return output
            self._refill(layer, cache_layer, kwargs, q_len)
            return output

        return hook

    def _refill(self, layer: int, cache_layer: Any, kwargs: dict, q_len: int) -> None:
        """Track the appended entries' positions; compress the layer when ``interval`` entries have arrived."""
        n = cache_layer.keys.shape[-2]
        pos = self._positions.get(layer)
        if pos is None:  # a cache this press did not prefill: positions counted from 0
            pos = torch.arange(n - q_len, device=cache_layer.keys.device, dtype=torch.float32)
        ids = kwargs.get("position_ids")
        new = (
            ids[0].float()
            if ids is not None
            else pos[-1] + 1 + torch.arange(q_len, device=pos.device, dtype=torch.float32)
        )
        pos = torch.cat([pos, new.to(pos.device)])
        target = self._targets.setdefault(layer, n - q_len)
        if self.interval and n >= target + self.interval:
            cache_layer.keys, cache_layer.values, pos = self.squeeze(cache_layer.keys, cache_layer.values, pos, target)
        self._positions[layer] = pos


def rotary_of(model: nn.Module) -> nn.Module:
    """The rotary embedding module of a Llama-style model."""
    rotary = getattr(getattr(model, "model", model), "rotary_emb", None)
    if rotary is None:
        raise InvalidInputError(f"freqkv needs a model with a rotary embedding; {type(model).__name__} has none")
    return rotary
