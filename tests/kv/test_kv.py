"""KV presses on a tiny random Llama (CPU, fast) and, when CUDA is there, the same presses and the Triton kernels."""

from __future__ import annotations

import pytest
import torch

from promptshrink import kv
from promptshrink.kv import dispatch as K
from promptshrink.kv.observation import window_attention
from tests.support.tiny_llama import CUDA, ByteTok, random_ids, tiny_model

METHODS = [name for name in kv.press_names() if kv.get_press(name).evicts]  # cskv: tests/kv/test_kv_cskv.py


def press(name: str, ratio: float, model) -> kv.BasePress:  # noqa: ANN001
    if name == "qfilters":
        ids = random_ids(64, seed=7).to(model.device)
        return kv.make_press(name, ratio=ratio, filters=kv.compute_qfilters(model, [ids]))
    return kv.make_press(name, ratio=ratio)


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    return tiny_model()


@pytest.mark.parametrize("name", METHODS)
def test_press_shrinks_cache_and_decodes(model, name: str) -> None:  # noqa: ANN001
    ids = random_ids(200)
    cache = kv.prefill(model, ids, press(name, 0.25, model))
    lens = [layer.keys.shape[-2] for layer in cache.layers]
    assert sum(lens) == pytest.approx(3 * 50, abs=12)
    if name == "pyramidinfer":
        assert lens[0] > lens[1] > lens[2]
    out = kv.decode(model, cache, torch.tensor([[3, 4, 5]]), 200, 4)
    assert len(out) == 4


def test_explicit_positions_match_plain_generate(model) -> None:  # noqa: ANN001
    ids = random_ids(40)
    ref = model.generate(ids, max_new_tokens=6, do_sample=False)[0, 40:].tolist()
    cache = kv.prefill(model, ids[:, :-1])
    assert kv.decode(model, cache, ids[:, -1:], 39, 6) == ref


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
def test_context_manager_applies_to_generate(impl: str) -> None:
    m = tiny_model(impl)
    ids = random_ids(120)
    snap = kv.SnapKVPress(ratio=0.25)
    with snap(m):
        out = m.generate(ids, max_new_tokens=5, do_sample=False)[0, 120:].tolist()
    # same thing by hand: compressed prompt cache, first token from the prefill logits, then explicit positions
    cache = kv.pipeline.new_cache()
    with snap(m):
        logits = m(input_ids=ids, use_cache=True, **{kv.pipeline.cache_kwarg(m): cache}).logits
    assert cache.layers[0].keys.shape[-2] == 30
    first = int(logits[0, -1].argmax())
    assert out == [first, *kv.decode(m, cache, torch.tensor([[first]]), 120, 4)]


@pytest.mark.parametrize("name", METHODS)
def test_question_aware_prefill_keeps_question_and_compresses_context(model, name: str) -> None:  # noqa: ANN001
    ids = random_ids(210)
    full = kv.prefill(model, ids)
    cache = kv.prefill(model, ids, press(name, 0.25, model), question_len=10)
    kept = [layer.keys.shape[-2] - 10 for layer in cache.layers]
    assert sum(kept) == pytest.approx(3 * 50, abs=12)
    for a, b in zip(full.layers, cache.layers):
        assert torch.equal(a.keys[:, :, -10:], b.keys[:, :, -10:]) and torch.equal(
            a.values[:, :, -10:], b.values[:, :, -10:]
        )
    assert kv.decode(model, cache, torch.tensor([[3]]), 210, 3)


def test_question_aware_generate_without_press_matches_agnostic(model) -> None:  # noqa: ANN001
    tok = ByteTok()
    ctx, question = "some context " * 10, "question?"
    same = [kv.generate(model, tok, ctx, question, None, max_new_tokens=5, question_aware=qa) for qa in (False, True)]
    assert same[0] == same[1]
    with pytest.raises(ValueError, match="question_len"), kv.SnapKVPress()(model, question_len=-1):
        pass


def test_streaming_llm_keeps_sinks_and_recent(model) -> None:  # noqa: ANN001
    keys = torch.arange(100.0).view(1, 1, 100, 1).expand(1, 2, 100, 4)
    k, v = kv.StreamingLLMPress(ratio=0.1, sink=4).compress(0, 1, keys, keys, None, 1.0)
    assert k[0, 0, :, 0].tolist() == [0, 1, 2, 3, 94, 95, 96, 97, 98, 99]


def test_window_attention_matches_eager_attention() -> None:
    torch.manual_seed(1)
    q, keys = torch.randn(1, 4, 8, 16), torch.randn(1, 2, 40, 16)
    attn = window_attention(q, keys, 0.25)
    full = (q @ keys.repeat_interleave(2, dim=1).transpose(-1, -2)) * 0.25
    mask = torch.ones(8, 40, dtype=torch.bool).tril(32)
    ref = full.masked_fill(~mask, float("-inf")).softmax(-1).view(1, 2, 2, 8, 40)
    torch.testing.assert_close(attn, ref)
    # question-aware: the queries follow every key, nothing is masked
    torch.testing.assert_close(window_attention(q, keys, 0.25, causal=False), full.softmax(-1).view(1, 2, 2, 8, 40))


def test_question_aware_snapkv_scores_with_the_question() -> None:
    torch.manual_seed(4)
    keys, q = torch.randn(1, 1, 64, 8) * 0.1, torch.randn(1, 1, 4, 8)
    keys[0, 0, 62] = q[0, 0].sum(0) * 3  # attended by the question, but the last context token of a causal window
    snap = kv.SnapKVPress(ratio=0.125, window=4, protect=4, kernel=1)
    snap.question = 4
    k, _ = snap.compress(0, 1, keys, keys, q, 1.0)
    assert k.shape[2] == 8 and any(torch.equal(row, keys[0, 0, 62]) for row in k[0, 0])
    assert not torch.equal(k[0, 0, -4:], keys[0, 0, -4:])  # no context tail protected: the window is the question


def test_snapkv_keeps_the_most_attended_token() -> None:
    torch.manual_seed(2)
    keys, q = torch.randn(1, 1, 64, 8) * 0.1, torch.randn(1, 1, 4, 8)
    keys[0, 0, 10] = q[0, 0].sum(0) * 3  # key 10 aligned with the window queries
    k, _ = kv.SnapKVPress(ratio=0.125, window=4, protect=4, kernel=1).compress(0, 1, keys, keys, q, 1.0)
    assert any(torch.equal(row, keys[0, 0, 10]) for row in k[0, 0])


def test_chunk_reference_keeps_whole_chunks() -> None:
    scores = torch.zeros(1, 43)
    scores[0, 23:33] = 1.0  # chunk 2 after the 3-token prefix
    keys = torch.arange(43.0).view(1, 1, 43, 1).expand(1, 2, 43, 2)
    k, _, ids = K.chunk_select_reference(scores, keys, keys, 10, 1)
    assert ids.tolist() == [[2]] and k[0, 1, :, 0].tolist() == [0, 1, 2, *range(23, 33)]


def test_zeromerge_residual_slot_compensates_count() -> None:
    torch.manual_seed(3)
    keys, values, q = torch.randn(1, 1, 40, 8), torch.randn(1, 1, 40, 8), torch.randn(1, 2, 4, 8)
    zm = kv.ZeroMergePress(ratio=0.5, window=4, max_residual=0.5)
    k, v = zm.compress(0, 1, keys, values, q, 0.35)
    assert k.shape == (1, 1, 20, 8) and torch.isfinite(k).all() and torch.isfinite(v).all()


def zeromerge_loop_reference(
    zm: kv.ZeroMergePress, keys: torch.Tensor, values: torch.Tensor, queries: torch.Tensor, scaling: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The original per-head loop of ZeroMergePress.compress, kept as the reference for the vectorised merge."""
    import math

    seq = keys.shape[-2]
    k = zm.n_keep(seq)
    b, kv_heads = keys.shape[:2]
    attn = window_attention(queries, keys, scaling, zm.causal).mean(dim=(2, 3))
    vnorm = values.float().norm(dim=-1)
    score = attn * vnorm / vnorm.mean(dim=-1, keepdim=True)
    p = attn / attn.sum(-1, keepdim=True)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(seq)
    exact = zm.window if zm.causal else 0
    residual = (zm.max_residual * k * entropy).floor().long().clamp(max=max(0, k - exact - 1))
    if exact:
        score[..., -exact:] = float("inf")
    q_mean = queries.float().reshape(b, kv_heads, -1, queries.shape[-1]).mean(dim=2)
    out_k, out_v = torch.empty_like(keys[:, :, :k]), torch.empty_like(values[:, :, :k])
    for i in range(b):
        for h in range(kv_heads):
            n_res, sc = int(residual[i, h]), score[i, h]
            order = sc.topk(k - n_res).indices.sort().values
            ks, vs = keys[i, h, order], values[i, h, order]
            if n_res:
                evicted_mask = torch.ones_like(sc, dtype=torch.bool)
                evicted_mask[order] = False
                evicted = evicted_mask.nonzero().squeeze(1)
                group = torch.arange(len(evicted), device=keys.device) * n_res // len(evicted)
                w = sc[evicted].clamp_min(1e-12)
                norm = torch.zeros(n_res, device=keys.device).index_add_(0, group, w)
                w = (w / norm[group])[:, None]
                d = keys.shape[-1]
                mk = torch.zeros(n_res, d, device=keys.device).index_add_(0, group, w * keys[i, h, evicted].float())
                mv = torch.zeros(n_res, d, device=keys.device).index_add_(0, group, w * values[i, h, evicted].float())
                count = torch.bincount(group, minlength=n_res).float()
                qm = q_mean[i, h]
                mk += count.log()[:, None] * qm / (scaling * qm.square().sum().clamp_min(1e-12))
                ks, vs = torch.cat([ks, mk.to(keys.dtype)]), torch.cat([vs, mv.to(values.dtype)])
            out_k[i, h], out_v[i, h] = ks, vs
    return out_k, out_v


@pytest.mark.parametrize("device", ["cpu", *(["cuda"] if CUDA else [])])
@pytest.mark.parametrize(
    ("batch", "seq", "ratio", "max_residual", "question", "dtype"),
    [
        (1, 40, 0.5, 0.5, 0, torch.float32),
        (2, 301, 0.25, 0.25, 0, torch.float32),
        (3, 257, 0.3, 0.9, 7, torch.float32),  # question-aware: no exact window
        (2, 300, 0.5, 0.01, 0, torch.float32),  # the sharpest head gets no residual slot
        (2, 513, 0.125, 0.5, 0, torch.bfloat16),
    ],
)
def test_zeromerge_vectorised_matches_loop(
    device: str, batch: int, seq: int, ratio: float, max_residual: float, question: int, dtype: torch.dtype
) -> None:
    torch.manual_seed(seq + batch)
    heads, kv_heads, dim, window = 8, 4, 16, 8
    keys = torch.randn(batch, kv_heads, seq, dim, device=device, dtype=dtype)
    values = torch.randn_like(keys) * torch.rand(batch, kv_heads, seq, 1, device=device, dtype=dtype)
    # per-KV-head query scales: flat to sharp window attention, so heads get different residual counts
    scale = torch.tensor([0.1, 1.0, 4.0, 32.0], device=device, dtype=dtype).repeat_interleave(heads // kv_heads)
    queries = torch.randn(batch, heads, question or window, dim, device=device, dtype=dtype) * scale[:, None, None]
    zm = kv.ZeroMergePress(ratio=ratio, window=window, max_residual=max_residual)
    zm.question = question
    k, v = zm.compress(0, 1, keys, values, queries, dim**-0.5)
    rk, rv = zeromerge_loop_reference(zm, keys, values, queries, dim**-0.5)
    assert k.shape == rk.shape == (batch, kv_heads, zm.n_keep(seq), dim)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(k, rk, **tol)
    torch.testing.assert_close(v, rv, **tol)


def test_qfilters_roundtrip(tmp_path, model) -> None:  # noqa: ANN001
    filters = kv.compute_qfilters(model, [random_ids(32)])
    assert filters.shape == (3, 2, 16)
    kv.save_qfilters(filters, "tiny", root=tmp_path)
    loaded = kv.QFiltersPress.from_pretrained("tiny", ratio=0.5, root=tmp_path)
    torch.testing.assert_close(loaded.filters, filters)


@pytest.mark.parametrize("question_aware", [False, True])
def test_generate_entry_point(model, question_aware: bool) -> None:  # noqa: ANN001
    out = kv.generate(
        model, ByteTok(), "some context " * 10, "question?", "snapkv", 0.5, 3, question_aware=question_aware
    )
    assert len(out) == 3


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("name", METHODS)
def test_presses_on_gpu(name: str) -> None:
    m = tiny_model(device="cuda")
    ids = random_ids(300).to("cuda")
    cache = kv.prefill(m, ids, press(name, 0.25, m))
    assert kv.decode(m, cache, torch.tensor([[1, 2]], device="cuda"), 300, 3)


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("seq", [1000, 4097, 20011])
def test_triton_kernels_match_reference(seq: int) -> None:
    torch.manual_seed(seq)
    keys = torch.randn(2, 8, seq, 128, device="cuda", dtype=torch.bfloat16)
    values, scores, filt = torch.randn_like(keys), torch.rand(2, seq, device="cuda"), torch.randn(8, 128, device="cuda")
    tri = K.triton_module("chunk_select")
    assert tri is not None
    ko, vo, ids = tri.chunk_select(scores, keys, values, 10, seq // 40)
    rk, rv, rids = K.chunk_select_reference(scores, keys, values, 10, seq // 40)
    assert torch.equal(ids.long(), rids.long()) and torch.equal(ko, rk) and torch.equal(vo, rv)
    out = K.qfilter_scores(keys, filt)
    ref = torch.einsum("bhsd,hd->bhs", keys.double(), filt.double())
    assert float((out.double() - ref).norm() / ref.norm()) < 1e-5
