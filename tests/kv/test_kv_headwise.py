"""Head-wise budgets (``headwise``): budgets shared out among heads, and exact attention over the shared pool."""

from __future__ import annotations

import pytest
import torch

from promptshrink import kv
from promptshrink.errors import InvalidInputError, PromptShrinkError
from promptshrink.kv.headwise import HeadwiseLayer, headwise_attention
from tests.support.tiny_llama import CUDA, random_ids, tiny_model


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    return tiny_model()


def reference_attention(
    query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, owner: torch.Tensor, pool: int, scaling: float
) -> torch.Tensor:
    """Per batch row and query head, in float64: gather the head's own pool slots and tail, causal softmax."""
    b, heads, q_len, dim = query.shape
    kv_heads = keys.shape[1]
    out = torch.empty(b, q_len, heads, dim, dtype=torch.float64)
    for i in range(b):
        flat_k = keys[i, :, :pool].reshape(-1, dim).double()
        flat_v = values[i, :, :pool].reshape(-1, dim).double()
        for h in range(heads):
            g = h // (heads // kv_heads)
            mine = owner[i] == g
            tail_k, tail_v = keys[i, g, pool:].double(), values[i, g, pool:].double()
            for t in range(q_len):
                visible = tail_k.shape[0] - q_len + t + 1
                k = torch.cat([flat_k[mine], tail_k[:visible]])
                v = torch.cat([flat_v[mine], tail_v[:visible]])
                w = (k @ query[i, h, t].double() * scaling).softmax(-1)
                out[i, t, h] = w @ v
    return out


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if CUDA else [])])
@pytest.mark.parametrize(
    ("batch", "q_len", "dtype"), [(1, 1, torch.float32), (2, 5, torch.float32), (2, 3, torch.bfloat16)]
)
def test_pool_attention_matches_per_head_reference(device: str, batch: int, q_len: int, dtype: torch.dtype) -> None:
    torch.manual_seed(q_len)
    heads, kv_heads, pool, tail, dim = 8, 4, 12, 6, 16
    keys = torch.randn(batch, kv_heads, pool + tail, dim, dtype=dtype, device=device)
    values, query = torch.randn_like(keys), torch.randn(batch, heads, q_len, dim, dtype=dtype, device=device)
    owner = torch.randint(0, kv_heads, (batch, kv_heads * pool), device=device)  # uneven budgets, one head may own 0
    out = headwise_attention(query, keys, values, owner, pool, dim**-0.5)
    ref = reference_attention(query.cpu(), keys.cpu(), values.cpu(), owner.cpu(), pool, dim**-0.5)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(out.cpu().double(), ref, **tol)


def test_floor_one_is_the_wrapped_press(model) -> None:  # noqa: ANN001
    """Every head guaranteed its uniform budget = the wrapped press's per-head top-k, decoded the same."""
    ids, prompt = random_ids(200), torch.tensor([[3, 4, 5]])
    press = kv.make_press("headwise", ratio=0.25, model=model, floor=1.0)
    cache, ref = kv.prefill(model, ids, press), kv.prefill(model, ids, kv.make_press("snapkv", ratio=0.25))
    for a, b in zip(cache.layers, ref.layers):
        assert isinstance(a, HeadwiseLayer) and a.pool == 50
        assert torch.equal(a.owner[0], torch.arange(2).repeat_interleave(50))
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    logits = kv.pipeline.step(model, cache, prompt, 200)
    torch.testing.assert_close(logits, kv.pipeline.step(model, ref, prompt, 200), rtol=1e-4, atol=1e-4)
    assert kv.decode(model, cache, prompt, 203, 8) == kv.decode(model, ref, prompt, 203, 8)


def test_budgets_follow_the_scores() -> None:
    """Head 0 attends to 3 keys, head 1 evenly: head 1 gets the slots head 0 does not need, above the floor."""
    torch.manual_seed(0)
    seq, dim, k = 64, 8, 16
    keys = torch.randn(1, 2, seq, dim) * 0.01
    q = torch.zeros(1, 2, 4, dim)
    q[0, 0, :, 0] = 50.0
    keys[0, 0, [5, 20, 40], 0] = 1.0  # head 0's attention sits on three keys
    press = kv.make_press("headwise", ratio=k / seq, floor=0.25, options={"protect": 0, "kernel": 1})
    flat = press.budgets(0, keys, keys, q, 1.0, k)
    owner, pos = flat[0] // seq, flat[0] % seq
    budget = torch.bincount(owner, minlength=2).tolist()
    assert sum(budget) == 2 * k and budget[0] == 4 and budget[1] == 2 * k - 4  # head 0 keeps only its floor
    assert {5, 20, 40} <= set(pos[owner == 0].tolist())


def test_context_manager_applies_to_generate(model) -> None:  # noqa: ANN001
    ids = random_ids(200)
    press = kv.make_press("headwise", ratio=0.25, model=model)
    with press(model):
        out = model.generate(ids, max_new_tokens=6, do_sample=False, return_dict_in_generate=True)
    layers = out.past_key_values.layers
    assert all(isinstance(layer, HeadwiseLayer) and layer.keys.shape[-2] == 50 + 5 for layer in layers)
    assert any(torch.bincount(layer.owner[0]).tolist() != [50, 50] for layer in layers)  # budgets did move
    cache, logits = kv.prefill_logits(model, ids, press)
    first = int(logits[0, -1].argmax())
    assert out.sequences[0, 200:].tolist() == [first, *kv.decode(model, cache, torch.tensor([[first]]), 200, 5)]


def test_plain_caches_are_untouched_after_a_headwise_one(model) -> None:  # noqa: ANN001
    ids = random_ids(60)
    kv.decode(model, kv.prefill(model, ids, kv.make_press("headwise", ratio=0.5)), ids[:, -1:], 60, 2)
    ref = model.generate(ids, max_new_tokens=4, do_sample=False)[0, 60:].tolist()
    assert kv.decode(model, kv.prefill(model, ids[:, :-1]), ids[:, -1:], 59, 4) == ref


def test_eager_attention_is_refused() -> None:
    m = tiny_model("eager")
    with pytest.raises(InvalidInputError, match="eager"):
        kv.prefill(m, random_ids(40), kv.make_press("headwise", ratio=0.5))


def test_a_bypassed_routing_is_an_error_not_a_wrong_answer() -> None:
    """A head-wise cache decoded by eager attention (which transformers calls directly) is refused."""
    m = tiny_model()
    cache = kv.prefill(m, random_ids(200), kv.make_press("headwise", ratio=0.25))
    m.set_attn_implementation("eager")
    with pytest.raises(PromptShrinkError, match="bypassed"):
        kv.pipeline.step(m, cache, torch.tensor([[3]]), 200)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_headwise_press_on_gpu_matches_cpu() -> None:
    ids, prompt = random_ids(300), torch.tensor([[1, 2]])
    out = {}
    for device in ("cpu", "cuda"):
        m = tiny_model(device=device)
        cache = kv.prefill(m, ids.to(device), kv.make_press("headwise", ratio=0.25, model=m))
        out[device] = kv.pipeline.step(m, cache, prompt.to(device), 300).cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-3)
