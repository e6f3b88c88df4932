"""RetroAttention (``retro``): page-sparse decoding with retrospective, exact log-sum-exp correction."""

from __future__ import annotations

import pytest
import torch

from promptshrink import kv
from promptshrink.errors import InvalidInputError
from promptshrink.kv.retro import RetroLayer, attend_masked, merge, page_bounds, quest_select
from tests.support.tiny_llama import CUDA, random_ids, tiny_model

PROMPT = torch.tensor([[3, 4, 5]])


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    return tiny_model()


def test_merge_is_attention_over_the_union() -> None:
    torch.manual_seed(0)
    q, keys, values = torch.randn(2, 8, 16), torch.randn(2, 4, 50, 16), torch.randn(2, 4, 50, 16)
    a = torch.rand(2, 4, 50) < 0.3
    b = (torch.rand(2, 4, 50) < 0.4) & ~a
    b[0, 1] = False  # one head gets nothing new: its output must stay as it was
    merged = merge(*attend_masked(q, keys, values, 0.25, a), *attend_masked(q, keys, values, 0.25, b))
    union = attend_masked(q, keys, values, 0.25, a | b)
    torch.testing.assert_close(merged[0], union[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(merged[1], union[1], rtol=1e-5, atol=1e-6)
    # the reference: plain softmax attention of each head over its entries, in float64
    mask = (a | b).repeat_interleave(2, dim=1)
    logits = torch.einsum("bhd,bhnd->bhn", q.double(), keys.repeat_interleave(2, dim=1).double()) * 0.25
    ref = torch.einsum(
        "bhn,bhnd->bhd", logits.masked_fill(~mask, -torch.inf).softmax(-1), values.double().repeat_interleave(2, 1)
    )
    torch.testing.assert_close(merged[0].double(), ref, rtol=1e-5, atol=1e-6)


def test_page_bound_is_an_upper_bound_and_selection_keeps_the_newest_page() -> None:
    torch.manual_seed(1)
    q, keys = torch.randn(1, 4, 8), torch.randn(1, 2, 83, 8)
    kmin, kmax = page_bounds(keys, 16)
    assert kmin.shape == (1, 2, 5, 8)
    logits = torch.einsum("bkgd,bknd->bkgn", q.view(1, 2, 2, 8), keys)[..., :80].reshape(1, 2, 2, 5, 16)
    bound = torch.maximum(q.view(1, 2, 2, 1, 8) * kmin[:, :, None], q.view(1, 2, 2, 1, 8) * kmax[:, :, None]).sum(-1)
    assert (logits.amax(-1) <= bound + 1e-6).all()
    idx = quest_select(q, keys, 40, 16, (kmin, kmax))
    assert idx.shape == (1, 2, 40)
    assert set(range(80, 83)) <= set(idx[0, 0].tolist())  # the partial page, then 2 full pages and 5 entries
    best = bound.sum(2).argmax(-1)  # the best full page of each KV head is loaded whole
    for h in range(2):
        assert set(range(16 * int(best[0, h]), 16 * int(best[0, h]) + 16)) <= set(idx[0, h].tolist())


def test_full_budget_is_full_attention(model) -> None:  # noqa: ANN001
    ids = random_ids(200)
    press = kv.make_press("retro", ratio=0.25, model=model)
    cache, full = kv.prefill(model, ids, press), kv.prefill(model, ids)
    assert all(isinstance(layer, RetroLayer) and layer.keys.shape[-2] == 50 for layer in cache.layers)
    for layer in cache.layers:
        layer.ratio = 1.0  # every step reads the whole cache
    with press.hooked(model):
        logits = kv.pipeline.step(model, cache, PROMPT, 200)
    torch.testing.assert_close(logits, kv.pipeline.step(model, full, PROMPT, 200), rtol=1e-4, atol=1e-5)
    assert kv.decode(model, cache, PROMPT[:, :1], 203, 12, press=press) == kv.decode(
        model, full, PROMPT[:, :1], 203, 12
    )


def test_corrected_outputs_are_attention_over_everything_seen(model) -> None:  # noqa: ANN001
    """At the first layer (whose cache no correction rewrites) each kept past output equals, recomputed from scratch,
    its query's attention over every entry it or a later step loaded; the later pages did reach it."""
    press = kv.make_press("retro", ratio=0.15, model=model, page=8)
    cache = kv.prefill(model, random_ids(300), press)
    kv.decode(model, cache, PROMPT, 300, 10, press=press)
    layer = cache.layers[0]
    assert [p.pos for p in layer.past] == [310, 311]  # 3 prompt tokens at 300-302, 9 generated fed
    module = kv.observation.attention_modules(model)[0]
    for past in layer.past:
        n = past.pos + 1
        ref = attend_masked(
            past.query, layer.store_keys[:, :, :n], layer.store_values[:, :, :n], module.scaling, past.seen
        )
        torch.testing.assert_close(past.out, ref[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(past.lse, ref[1], rtol=1e-5, atol=1e-6)
    older = layer.past[0]
    assert int(older.seen.sum()) > 2 * layer.budget(older.pos + 1)  # its own step's pages and later ones


def test_next_layer_rewrite_reproduces_the_forward(model) -> None:  # noqa: ANN001
    """Rewriting the next layer's entry from an output no page has corrected gives back the model's own key and value:
    the rewrite is the rest of the decoder layer, exactly."""
    press = kv.make_press("retro", ratio=0.25, model=model)
    cache = kv.prefill(model, random_ids(200), press)
    kv.decode(model, cache, PROMPT, 200, 4, press=press)
    first, second = cache.layers[0], cache.layers[1]
    past = first.past[-1]  # the newest: nothing has corrected it yet
    before = second.store_keys[:, :, past.pos].clone(), second.store_values[:, :, past.pos].clone()
    first._rewrite_next(kv.observation.attention_modules(model)[0], past)
    torch.testing.assert_close(second.store_keys[:, :, past.pos], before[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(second.store_values[:, :, past.pos], before[1], rtol=1e-5, atol=1e-6)


def test_retro_rewrites_what_quest_leaves(model) -> None:  # noqa: ANN001
    ids = random_ids(300)
    caches = {}
    for retro in (0, 2):
        press = kv.make_press("retro", ratio=0.15, model=model, page=8, retro=retro)
        caches[retro] = kv.prefill(model, ids, press)
        kv.decode(model, caches[retro], PROMPT, 300, 8, press=press)
    assert caches[0].layers[0].past == []  # retro 0: plain page-sparse (Quest) decoding
    a, b = caches[0].layers[2].store_keys, caches[2].layers[2].store_keys
    assert torch.equal(a[:, :, :300], b[:, :, :300])  # the prompt's entries are never rewritten
    assert not torch.allclose(a[:, :, 300:], b[:, :, 300:])  # generated tokens' entries were corrected


def test_decoding_without_the_hooks_warns(model) -> None:  # noqa: ANN001
    cache = kv.prefill(model, random_ids(300), kv.make_press("retro", ratio=0.15, model=model, page=8))
    with pytest.warns(UserWarning, match="next layers are not rewritten"):
        kv.decode(model, cache, PROMPT, 300, 6)


def test_eager_attention_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="eager"):
        kv.prefill(tiny_model("eager"), random_ids(40), kv.make_press("retro", ratio=0.5))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_retro_on_gpu_matches_cpu() -> None:
    ids, out = random_ids(300), {}
    for device in ("cpu", "cuda"):
        m = tiny_model(device=device)
        press = kv.make_press("retro", ratio=0.15, model=m, page=8)
        cache = kv.prefill(m, ids.to(device), press)
        kv.decode(m, cache, PROMPT.to(device), 300, 6, press=press)
        out[device] = cache.layers[2].store_keys.cpu()
    torch.testing.assert_close(out["cuda"], out["cpu"], rtol=1e-3, atol=1e-3)
