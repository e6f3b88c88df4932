"""FreqKV (``freqkv``): DCT low-pass resampling of the non-sink cache, keys before RoPE, repeated while decoding."""

from __future__ import annotations

import math

import pytest
import torch

from promptshrink import kv
from promptshrink.kv.freqkv import dct_resample
from tests.support.tiny_llama import CUDA, random_ids, tiny_model

PROMPT = torch.tensor([[3, 4, 5]])


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    return tiny_model()


def dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix, float64."""
    k, j = torch.arange(n, dtype=torch.float64)[:, None], torch.arange(n, dtype=torch.float64)[None]
    c = torch.cos(math.pi * k * (2 * j + 1) / (2 * n)) * math.sqrt(2 / n)
    c[0] /= math.sqrt(2)
    return c


@pytest.mark.parametrize(("n", "m"), [(40, 40), (40, 13), (197, 46), (8, 1)])
def test_dct_resample_matches_the_matrix_definition(n: int, m: int) -> None:
    x = torch.randn(2, 3, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    ref = (x @ dct_matrix(n)[:m].T) @ dct_matrix(m) * math.sqrt(m / n)
    torch.testing.assert_close(dct_resample(x, m).double(), ref, rtol=1e-4, atol=1e-5)
    if m == n:
        torch.testing.assert_close(dct_resample(x, m).double(), x, rtol=1e-4, atol=1e-5)


def test_a_low_frequency_signal_is_resampled_exactly() -> None:
    """A signal with frequencies below m, sampled at n cell centres, comes back sampled at m cell centres."""
    n, m = 120, 30

    def f(t: torch.Tensor) -> torch.Tensor:
        return 0.5 + torch.cos(math.pi * 3 * t) - 0.7 * torch.cos(math.pi * 11 * t)

    centres = lambda size: (torch.arange(size, dtype=torch.float64) + 0.5) / size  # noqa: E731
    torch.testing.assert_close(dct_resample(f(centres(n)), m).double(), f(centres(m)), rtol=1e-4, atol=1e-5)


def test_keys_are_compressed_before_rope(model) -> None:  # noqa: ANN001
    """Constant pre-RoPE keys stay constant when low-passed: each resampled key is that constant rotated at its new
    position. Without compression (as many entries kept) squeeze gives back the cache and its positions."""
    press = kv.make_press("freqkv", ratio=0.25, model=model, sink=4)
    pos = torch.arange(100, dtype=torch.float32)
    const = torch.randn(1, 2, 1, 16).expand(1, 2, 100, 16)
    cos, sin = press._rope(pos, const)
    keys = const * cos + kv.observation._rotate_half(const) * sin
    values = torch.randn(1, 2, 100, 16)
    same = press.squeeze(keys, values, pos, 100)
    torch.testing.assert_close(same[0], keys, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(same[1], values, rtol=1e-5, atol=1e-5)
    assert torch.equal(same[2], pos)
    new_k, new_v, new_pos = press.squeeze(keys, values, pos, 25)
    assert new_k.shape == new_v.shape == (1, 2, 25, 16) and torch.equal(new_k[:, :, :4], keys[:, :, :4])
    torch.testing.assert_close(new_pos[4:], 4 + (torch.arange(21) + 0.5) * 96 / 21 - 0.5)
    cos, sin = press._rope(new_pos[4:], const)
    torch.testing.assert_close(
        new_k[:, :, 4:],
        const[:, :, :21] * cos + kv.observation._rotate_half(const[:, :, :21]) * sin,
        rtol=1e-4,
        atol=1e-5,
    )


def test_prefill_keeps_sinks_and_decoding_refills(model) -> None:  # noqa: ANN001
    ids = random_ids(200)
    press = kv.make_press("freqkv", ratio=0.25, model=model, interval=16)
    full, cache = kv.prefill(model, ids), kv.prefill(model, ids, press)
    for a, b in zip(full.layers, cache.layers):
        assert b.keys.shape[-2] == 50 and torch.equal(a.keys[:, :, :4], b.keys[:, :, :4])
        assert not torch.allclose(a.keys[:, :, -46:], b.keys[:, :, -46:])
    seen = []
    hook = kv.observation.attention_modules(model)[0].register_forward_pre_hook(
        lambda m, a, kw: seen.append(kw["cache"].layers[0].keys.shape[-2]), with_kwargs=True
    )
    try:
        out = kv.decode(model, cache, PROMPT, 200, 60, press=press)
    finally:
        hook.remove()
    assert len(out) == 60 and all(50 <= n < 66 for n in seen) and min(seen[1:]) == 50  # compressed again
    pos = press._positions[0]
    assert len(pos) == cache.layers[0].keys.shape[-2] and pos[-1] == 200 + 3 + 58  # absolute, last token fed
    assert (pos.diff() > 0).all()


def test_question_aware_positions_follow_the_context(model) -> None:  # noqa: ANN001
    press = kv.make_press("freqkv", ratio=0.25, model=model)
    cache = kv.prefill(model, random_ids(210), press, question_len=10)
    assert [layer.keys.shape[-2] for layer in cache.layers] == [60] * 3
    assert press._positions[1][-10:].tolist() == list(range(200, 210)) and press._positions[1][49] < 200


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_freqkv_on_gpu_matches_cpu() -> None:
    ids, out = random_ids(300), {}
    for device in ("cpu", "cuda"):
        m = tiny_model(device=device)
        press = kv.make_press("freqkv", ratio=0.25, model=m, interval=8)
        cache = kv.prefill(m, ids.to(device), press)
        kv.decode(m, cache, PROMPT.to(device), 300, 12, press=press)
        out[device] = cache.layers[2].keys.cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-3)
