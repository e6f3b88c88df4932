"""Device choice for the LM-scored methods: resolution, and the same keep decisions across precisions/devices."""

from __future__ import annotations

import os

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.errors import InvalidInputError, ModelUnavailableError
from tests.support.models import agreement, needs_lm, random_weight_model

torch = pytest.importorskip("torch")
from promptshrink.model_loading import DEVICE_ENV, resolve_device, use_device  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def test_resolution(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    assert resolve_device("cpu") == resolve_device(" CPU ") == "cpu"
    assert resolve_device("auto") == resolve_device() == ("cuda:0" if HAS_CUDA else "cpu")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert resolve_device() == "cpu"
    with use_device("auto"):
        assert resolve_device() == ("cuda:0" if HAS_CUDA else "cpu")
    assert resolve_device() == "cpu"
    for bad in ("gpu", "cuda:x", "cuda:", "tpu:0"):
        with pytest.raises(InvalidInputError, match="device must be"):
            resolve_device(bad)


@pytest.mark.skipif(HAS_CUDA, reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ModelUnavailableError, match="no CUDA device"):
        ps.compress("One sentence here. Another one there. A third.", "selective_context", rate=0.5, device="cuda")


def test_model_free_methods_ignore_the_device():
    r = ps.compress("One sentence here. Another one there. A third.", "keep_first", rate=0.5, device="cuda:7")
    assert r.compressed_tokens <= r.original_tokens // 2


@needs_lm
def test_fp32_and_bf16_keep_the_same_units(monkeypatch, article):
    """The property the GPU path relies on (bf16 there): decisions match fp32 up to numerical ties."""
    text = article[:3000]
    results = {}
    for dtype in ("float32", "bfloat16"):
        monkeypatch.setenv("PROMPTSHRINK_DTYPE", dtype)
        results[dtype] = ps.compress(text, "selective_context", rate=0.5, device="cpu", question="What about taxes?")
    assert agreement(results["float32"], results["bfloat16"]) >= 0.95


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cpu_and_cuda_keep_the_same_units(tmp_path, article):
    """CPU (fp32) against CUDA (bf16) on a random-weight model of the bundled architecture."""
    with pytest.raises(InvalidInputError, match="does not exist"):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
    model = random_weight_model(tmp_path / "arch")
    kwargs = {"rate": 0.5, "question": "What about taxes?", "model": model}
    for method in ("selective_context", "llmlingua"):
        kw = {k: v for k, v in kwargs.items() if method == "selective_context" or k != "question"}
        os.environ["PROMPTSHRINK_DTYPE"] = "float32"
        try:
            on_cpu = ps.compress(article, method, device="cpu", **kw)
        finally:
            del os.environ["PROMPTSHRINK_DTYPE"]
        on_gpu = ps.compress(article, method, device="cuda", **kw)
        print(method, "cpu/cuda agreement", agreement(on_cpu, on_gpu))
        assert agreement(on_cpu, on_gpu) >= 0.95


@needs_lm
def test_batched_equals_one_by_one(monkeypatch, article):
    """compress_batch runs the LM windows of all inputs together; every result equals its one-by-one twin."""
    monkeypatch.setenv("PROMPTSHRINK_DTYPE", "float32")  # bf16 sums depend on the batch shape
    texts = [article[:1500], article[1500:2200], article[4000:6500]]
    questions = ["What about taxes?", None, "Who spoke?"]
    batched = ps.compress_batch(texts, "selective_context", rate=0.4, questions=questions, device="cpu")
    for text, question, got in zip(texts, questions, batched):
        alone = ps.compress(text, "selective_context", rate=0.4, question=question, device="cpu")
        assert got.text == alone.text
        np.testing.assert_allclose([s.score for s in got.segments], [s.score for s in alone.segments], rtol=1e-4)


def test_batch_of_model_free_and_json_inputs():
    texts = ['{"a": "' + "word " * 60 + '"}', "One sentence here. Another one there. A third one too."]
    got = ps.compress_batch(texts, "keep_first", rate=0.5)
    assert [r.text for r in got] == [ps.compress(t, "keep_first", rate=0.5).text for t in texts]
    with pytest.raises(InvalidInputError, match="questions"):
        ps.compress_batch(texts, "keep_first", questions=["q"])
