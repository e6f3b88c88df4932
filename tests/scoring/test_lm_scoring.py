"""The LM scoring pass: padded/bucketed batches (the CUDA-graph shapes) score like the eager pass, on CPU and GPU."""

from __future__ import annotations

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.errors import InvalidInputError
from promptshrink.scoring import lm
from tests.support.models import needs_lm

torch = pytest.importorskip("torch")
HAS_CUDA = torch.cuda.is_available()


def test_row_parts_are_descending_powers_of_two():
    for rows in range(1, 70):
        parts = lm.row_parts(rows)
        assert sum(parts) == rows
        assert parts == sorted(parts, reverse=True)
        assert all(p & (p - 1) == 0 for p in parts)
        assert len(parts) == bin(rows).count("1")


def test_padded_width_rounds_up_within_the_window():
    assert [lm.padded_width(w, 1024) for w in (1, 128, 129, 1000, 1024)] == [128, 128, 256, 1024, 1024]
    assert lm.padded_width(700, 720) == 720  # capped at a window that is not a multiple of the step
    assert lm.padded_width(900, 800) == 900  # never below the width itself


def test_graphs_setting(monkeypatch):
    for value, expected in (("off", False), ("0", False), ("1", True), ("on", True), ("", True)):
        monkeypatch.setenv(lm.GRAPHS_ENV, value)
        assert lm.cuda_graphs_enabled() is expected
    monkeypatch.setenv(lm.GRAPHS_ENV, "sometimes")
    with pytest.raises(InvalidInputError, match=lm.GRAPHS_ENV):
        lm.cuda_graphs_enabled()


@needs_lm
def test_padded_pass_equals_the_eager_pass_on_cpu(monkeypatch, article):
    """The graph path's computation (batches split into power-of-two parts, widths bucketed, the LM head on every
    position in blocks) run without graphs on CPU gives the eager pass's scores."""
    monkeypatch.setenv("PROMPTSHRINK_DTYPE", "float32")
    texts = [article[:900], article[900:1300], article[:900]]
    prefixes = [None, "Question: who spoke?\n", "Question: what about taxes?\n"]
    kwargs = {"max_window": 192, "overlap": 32, "batch_tokens": 1000}  # several windows, parts and widths
    eager = lm.start_surprisal(texts, prefixes=prefixes, graphs=False, **kwargs).collect()
    steps: list[tuple[int, int]] = []
    padded = lm.start_surprisal(texts, prefixes=prefixes, graphs=True, **kwargs).collect(lambda *a: steps.append(a))
    assert steps and steps[-1][0] == steps[-1][1] and [d for d, _ in steps] == sorted(d for d, _ in steps)
    for a, b in zip(eager, padded):
        np.testing.assert_array_equal(a.offsets, b.offsets)
        assert len(a.values) > 50 and np.all(a.values > 0)
        np.testing.assert_allclose(b.values, a.values, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
@pytest.mark.parametrize("vocab", [49152, 50257])
def test_token_logprob_kernel_matches_log_softmax(vocab):
    from promptshrink.kv.dispatch import triton_module

    kernel = triton_module("token_logprob")
    if kernel is None:
        pytest.skip("no Triton")
    gen = torch.Generator(device="cuda").manual_seed(vocab)
    logits = (torch.randn(300, vocab, device="cuda", generator=gen) * 4).to(torch.bfloat16)
    targets = torch.randint(0, vocab, (300,), device="cuda", generator=gen)
    want = torch.log_softmax(logits, dim=-1, dtype=torch.float32).gather(1, targets[:, None])[:, 0]
    got = kernel.token_logprobs(logits, targets)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_graphs_match_the_eager_path(tmp_path, article, monkeypatch):
    """Graph replays (bf16, fused log-softmax, queued before segmentation) against the eager pass on the same GPU."""
    from tests.support.models import agreement, random_weight_model

    model = random_weight_model(tmp_path / "arch")
    texts = [article[:9000], article[9000:12000], article[3000:4000]]
    kwargs = {"rate": 0.5, "device": "cuda", "model": model, "questions": ["What about taxes?", None, "Who?"]}
    monkeypatch.setenv(lm.GRAPHS_ENV, "0")
    eager = ps.compress_batch(texts, "selective_context", **kwargs)
    monkeypatch.setenv(lm.GRAPHS_ENV, "1")
    graphs = ps.compress_batch(texts, "selective_context", **kwargs)
    one = ps.compress(texts[0], "selective_context", rate=0.5, device="cuda", model=model, question="What about taxes?")
    runner = next(iter(lm._RUNNERS.values()))
    assert runner.graphs and all(entry is not None for entry in runner.graphs.values())  # captured, not fallen back
    for a, b in zip(eager, graphs):
        assert agreement(a, b) >= 0.99
        want = np.array([s.score for s in a.segments if s.score is not None])
        got = np.array([s.score for s in b.segments if s.score is not None])
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-2
    assert agreement(one, graphs[0]) >= 0.99


def small_llama(dtype: torch.dtype = torch.float32) -> object:
    """A 2-layer Llama (grouped-query attention, as in SmolLM2) with seeded random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=6,
        num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config).to(dtype).eval()


def test_fused_llama_forward_equals_the_eager_decoder():
    """The fused layer wiring (concatenated q/k/v and gate/up, rotary split, norm chaining) with the PyTorch
    reference ops gives the eager decoder's hidden states; a model it does not reproduce is declined."""
    from promptshrink.scoring.fused_llama import FusedLlama, fused_decoder, supports

    model = small_llama()
    ids = torch.randint(0, 300, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state
        got = FusedLlama(model)(ids)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert fused_decoder(model) is fused_decoder(model)
    model.config.mlp_bias = True
    assert not supports(model)


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_fused_llama_kernels_match_the_references():
    from promptshrink.kv.dispatch import triton_module
    from promptshrink.scoring import fused_llama as ref

    kernels = triton_module("fused_llama")
    if kernels is None:
        pytest.skip("no Triton")
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, device="cuda", generator=gen).to(torch.bfloat16)

    x, res, w = rand(2, 37, 576), rand(2, 37, 576), rand(576)
    for residual in (None, res):
        for a, b in zip(kernels.add_rmsnorm(x, residual, w, 1e-5), ref.add_rmsnorm(x, residual, w, 1e-5)):
            torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-2)
    qkv, cos, sin = rand(2, 37, 15 * 64), rand(37, 64), rand(37, 64)
    for a, b in zip(kernels.rotary_split(qkv, cos, sin, 9, 3), ref.rotary_split(qkv, cos, sin, 9, 3)):
        torch.testing.assert_close(a, b, atol=2e-2, rtol=1e-2)
    gate_up = rand(2, 37, 2 * 1536)
    torch.testing.assert_close(kernels.silu_mul(gate_up), ref.silu_mul(gate_up), atol=2e-2, rtol=1e-2)
    model = small_llama(torch.bfloat16).cuda()
    ids = torch.randint(0, 300, (4, 128), device="cuda", generator=gen)
    with torch.inference_mode():
        want = model.get_decoder()(input_ids=ids, use_cache=False).last_hidden_state.float()
        got = ref.FusedLlama(model)(ids).float()
    assert (got - want).norm() / want.norm() < 1e-2
