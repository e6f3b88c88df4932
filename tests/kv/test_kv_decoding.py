"""Decoding-time compression (``decoding``): the cache stays bounded while generating, on the tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from promptshrink import kv
from promptshrink.errors import InvalidInputError
from promptshrink.kv.observation import window_queries
from tests.support.tiny_llama import CUDA, random_ids, tiny_model


@pytest.fixture(scope="module")
def model():  # noqa: ANN201
    return tiny_model()


def lengths(cache) -> list[int]:  # noqa: ANN001
    return [layer.keys.shape[-2] for layer in cache.layers]


class Recorder:
    """Pre-forward hooks on every layer's attention recording the cache length each forward starts from (what the
    previous forward, its press hooks included, left behind)."""

    def __init__(self, model) -> None:  # noqa: ANN001
        self.seen: list[list[int]] = []
        modules = kv.observation.attention_modules(model)
        self.handles = [m.register_forward_pre_hook(self.hook(i), with_kwargs=True) for i, m in enumerate(modules)]

    def hook(self, layer: int):  # noqa: ANN202
        def record(module, args, kwargs):  # noqa: ANN001, ANN202
            if layer == 0:
                self.seen.append([])
            self.seen[-1].append(kwargs["cache"].layers[layer].keys.shape[-2])

        return record

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("inner", ["snapkv", "pyramidinfer", "qfilters"])
def test_cache_stays_between_target_and_target_plus_interval(model, inner: str) -> None:  # noqa: ANN001
    options = {"filters": kv.compute_qfilters(model, [random_ids(64, seed=7)])} if inner == "qfilters" else None
    press = kv.make_press("decoding", ratio=0.25, model=model, press=inner, options=options, interval=16)
    cache = kv.prefill(model, random_ids(200), press)
    after_prefill = lengths(cache)
    assert after_prefill == [press.n_keep(200, i, 3) for i in range(3)]
    recorder = Recorder(model)
    try:
        out = kv.decode(model, cache, torch.tensor([[3, 4, 5]]), 200, 81, press=press)
    finally:
        recorder.close()
    # the prompt in one forward (token by token for PyramidInfer's uneven layers), then 80 generated tokens fed
    assert len(out) == 81 and len(recorder.seen) == 80 + (3 if inner == "pyramidinfer" else 1)
    # no forward leaves a layer at target + interval or more; 3 + 80 appended entries make 5 compressions
    for step in recorder.seen + [lengths(cache)]:
        assert all(t <= n < t + 16 for n, t in zip(step, after_prefill)), step
    assert sum(1 for a, b in zip(recorder.seen, recorder.seen[1:]) if b[0] < a[0]) == 5


def test_no_decode_compression_before_interval_matches_the_wrapped_press(model) -> None:  # noqa: ANN001
    ids, prompt = random_ids(200), torch.tensor([[3, 4, 5]])
    press = kv.make_press("decoding", ratio=0.25, model=model, interval=1000)
    ref_cache = kv.prefill(model, ids, kv.make_press("snapkv", ratio=0.25))
    cache = kv.prefill(model, ids, press)
    for a, b in zip(ref_cache.layers, cache.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
    assert kv.decode(model, cache, prompt, 200, 12, press=press) == kv.decode(model, ref_cache, prompt, 200, 12)
    assert lengths(cache) == [50 + 3 + 11] * 3


def test_decode_compression_is_the_wrapped_press_on_the_recent_queries(model) -> None:  # noqa: ANN001
    """The compression during decoding equals the wrapped press's selection with the queries of the tokens appended
    since the last compression as its window, on the cache as it stood before."""
    ids = random_ids(120)
    options = {"protect": 4, "kernel": 3}
    press = kv.make_press("decoding", ratio=0.25, model=model, interval=8, target=30, options=options)
    cache = kv.prefill(model, ids, press)
    modules = kv.observation.attention_modules(model)
    seen: dict[int, tuple] = {}

    def grab(i: int):  # noqa: ANN202
        def before_the_press(module, args, kwargs, output):  # noqa: ANN001, ANN202
            layer = kwargs["cache"].layers[i]
            seen[i] = (layer.keys.clone(), layer.values.clone(), kwargs["hidden_states"], kwargs["position_embeddings"])

        return before_the_press

    handles = [m.register_forward_hook(grab(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:  # 8 tokens appended in one forward: 30 + 8 reaches target + interval
        kv.decode(model, cache, random_ids(8, seed=3), 120, 1, press=press)
    finally:
        for h in handles:
            h.remove()
    assert lengths(cache) == [30] * 3
    snap = kv.make_press("snapkv", ratio=0.25, **options)
    for i, layer in enumerate(cache.layers):
        keys, values, hidden, pos = seen[i]
        assert keys.shape[-2] == 38
        q = window_queries(modules[i], hidden, pos, 8)
        k, v = snap.select(i, keys, values, q, modules[i].scaling, 30)
        assert not torch.equal(k, keys[:, :, -30:])  # not just the most recent entries
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)


def test_context_manager_compresses_inside_generate(model) -> None:  # noqa: ANN001
    ids = random_ids(120)
    press = kv.make_press("decoding", ratio=0.25, model=model, interval=10)
    with press(model):
        out = model.generate(ids, max_new_tokens=30, do_sample=False, return_dict_in_generate=True)
    assert all(30 <= n < 40 for n in lengths(out.past_key_values))
    # same tokens by hand: the first from the prefill logits, then decoding with the press's hooks on
    cache, logits = kv.prefill_logits(model, ids, press)
    first = int(logits[0, -1].argmax())
    rest = kv.decode(model, cache, torch.tensor([[first]]), 120, 29, press=press)
    assert out.sequences[0, 120:].tolist() == [first, *rest]


def test_generate_entry_point_keeps_compressing(model) -> None:  # noqa: ANN001
    from tests.support.tiny_llama import ByteTok

    text = kv.generate(model, ByteTok(), "some context " * 20, "question?", "decoding", 0.25, 40)
    assert len(text) == 40


@pytest.mark.parametrize("wrapper", ["decoding", "headwise"])
@pytest.mark.parametrize("inner", ["streaming_llm", "chunkkv", "decoding", "headwise", "no-such-press"])
def test_only_scorer_presses_can_be_wrapped(wrapper: str, inner: str) -> None:
    with pytest.raises(InvalidInputError, match="press"):
        kv.make_press(wrapper, press=inner)


@pytest.mark.parametrize("wrapper", ["decoding", "headwise"])
@pytest.mark.parametrize("options", [{"ratio": 0.5}, {"window": 4}, {"kernel": 4}, {"no_such": 1}])
def test_bad_options_of_the_wrapped_press(wrapper: str, options: dict) -> None:
    with pytest.raises(InvalidInputError, match="options|kernel|no_such"):
        kv.make_press(wrapper, options=options)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_decoding_press_on_gpu() -> None:
    m = tiny_model(device="cuda")
    press = kv.make_press("decoding", ratio=0.25, model=m, interval=16)
    cache = kv.prefill(m, random_ids(300).to("cuda"), press)
    out = kv.decode(m, cache, torch.tensor([[1, 2]], device="cuda"), 300, 40, press=press)
    assert len(out) == 40 and all(75 <= n < 75 + 16 for n in lengths(cache))
