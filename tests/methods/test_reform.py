"""REFORM: the KV press (``reform``: gather by Q/K/V similarity, recompute) and its gather step as a text method."""

from __future__ import annotations

import pytest
import torch

import promptshrink as ps
from promptshrink import kv
from promptshrink.errors import InvalidInputError
from tests.support.models import needs_lm
from tests.support.tiny_llama import CUDA, random_ids, tiny_model


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    return tiny_model()


def test_recompute_is_a_forward_over_the_gathered_tokens(model) -> None:  # noqa: ANN001
    ids = random_ids(200)
    press = kv.make_press("reform", ratio=0.25)
    cache = kv.prefill(model, ids, press)
    idx = press._idx
    assert (
        idx.shape == (1, 50) and idx[0, :4].tolist() == [0, 1, 2, 3] and idx[0, -32:].tolist() == list(range(168, 200))
    )
    ref = kv.pipeline.new_cache()
    model(input_ids=ids.gather(1, idx), position_ids=idx, use_cache=True, **{kv.pipeline.cache_kwarg(model): ref})
    full = kv.prefill(model, ids)
    for i, (a, b, f) in enumerate(zip(cache.layers, ref.layers, full.layers)):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
        gathered = f.keys[:, :, idx[0]]
        assert torch.allclose(a.keys, gathered, atol=1e-6) == (i == 0)  # only the first layer sees no context


def test_without_recompute_every_layer_keeps_the_same_prefilled_tokens(model) -> None:  # noqa: ANN001
    ids = random_ids(200)
    press = kv.make_press("reform", ratio=0.25, recompute=False, depth=1.0)
    cache, full = kv.prefill(model, ids, press), kv.prefill(model, ids)
    for a, f in zip(cache.layers, full.layers):
        assert torch.equal(a.keys, f.keys[:, :, press._idx[0]]) and torch.equal(a.values, f.values[:, :, press._idx[0]])


def test_question_aware_gathers_what_the_question_repeats(model) -> None:  # noqa: ANN001
    """At depth 0 a token's embedding depends on its id only: a context token equal to the question's is gathered."""
    ids = random_ids(210, seed=3)
    ids[ids == 7] = 8
    ids[0, 100], ids[0, 200:] = 7, 7
    press = kv.make_press("reform", ratio=0.1, depth=0.0, kernel=1, sink=0)
    cache = kv.prefill(model, ids, press, question_len=10)
    assert 100 in press._idx[0].tolist() and [layer.keys.shape[-2] for layer in cache.layers] == [30] * 3
    assert kv.decode(model, cache, torch.tensor([[3]]), 210, 2)


@pytest.mark.parametrize("kwargs", [{"heads": (5,)}, {"heads": ()}, {"kernel": 4}, {"depth": 1.5}])
def test_bad_arguments(model, kwargs) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInputError):
        kv.prefill(model, random_ids(100), kv.make_press("reform", ratio=0.25, **kwargs))


@needs_lm
def test_text_method_keeps_the_sentence_the_question_is_about(article: str) -> None:
    text = "\n".join(article.split("\n")[:12]) + "\nThe secret passkey of the vault is 48213.\n" + article[3000:4500]
    question = "What is the secret passkey of the vault?"
    r = ps.compress(text, "reform", rate=0.3, question=question, unit="sentence")
    assert "48213" in r.text
    plain = ps.compress(text, "reform", rate=0.3, unit="sentence")
    assert plain.text != r.text  # the question changes what is gathered


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_reform_on_gpu_matches_cpu() -> None:
    out = {}
    for device in ("cpu", "cuda"):
        m = tiny_model(device=device)
        press = kv.make_press("reform", ratio=0.25)
        cache = kv.prefill(m, random_ids(300).to(device), press)
        out[device] = (press._idx.cpu(), cache.layers[2].keys.cpu())
    assert torch.equal(out["cuda"][0], out["cpu"][0])
    torch.testing.assert_close(out["cuda"][1], out["cpu"][1], rtol=1e-3, atol=1e-3)
