"""Every service path hands the library the request's whole options (issue 18's dropped-option bugs).

A test-only method records what reached it, on a real server over HTTP: the micro-batched path used to pass no
``timeout_s``; messages and passages requests dropped ``protect_numbers`` and ``seed``; the proxy dropped
``protect_numbers``, ``seed`` and the server's ``device``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest

from promptshrink import registry
from promptshrink.methods.base import CompressionRequest, ExtractiveCompressor
from promptshrink.model_loading import _DEVICE
from promptshrink.segmentation import Unit
from tests.support.servers import Upstream, base_settings, serve
from tests.support.texts import LONG_TEXT

SEEN: list[dict[str, Any]] = []


@dataclass
class Probe(ExtractiveCompressor):
    """Test only: records the options each request reached it with; keeps the first units."""

    name = "test_probe"
    summary = "Test only: records what reached it; keeps the first units."
    default_unit = "word"
    batches = True  # so the server micro-batches it

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        seen = {"deadline": request.deadline, "device": _DEVICE.get(), "question": request.question}
        SEEN.append({**seen, "protect_numbers": request.protect_numbers, "seed": request.seed})
        return -np.arange(len(units), dtype=float)

    def score_many(self, requests: Sequence[CompressionRequest], units: Sequence[Sequence[Unit]]) -> list[np.ndarray]:
        return [self.score_units(r, u) for r, u in zip(requests, units)]


@pytest.fixture(scope="module")
def url(upstream: Upstream) -> Iterator[str]:
    registry.method_names()
    registry.register(Probe)
    try:
        methods = frozenset({"keep_first", "test_probe"})
        yield from serve(base_settings(upstream, methods=methods, warmup=False, device="cpu", batch_wait_ms=5.0))
    finally:
        registry.METHODS.unregister(Probe.name)


def _last_after(call: Any) -> dict[str, Any]:
    SEEN.clear()
    response = call()
    assert response.status_code == 200, response.text
    assert SEEN, "the method never ran"
    return SEEN[-1]


def test_micro_batched_text_requests_get_the_time_limit_and_the_device(url: str) -> None:
    body = {"text": LONG_TEXT, "method": "test_probe", "rate": 0.5, "seed": 3, "protect_numbers": True}
    seen = _last_after(lambda: httpx.post(f"{url}/v1/compress", json=body, timeout=30))
    assert seen["deadline"] is not None  # the batched path used to pass no timeout_s
    assert seen["device"] == "cpu" and seen["seed"] == 3 and seen["protect_numbers"] is True


@pytest.mark.parametrize("kind", ["messages", "passages"])
def test_messages_and_passages_requests_honour_protect_numbers_and_seed(url: str, kind: str) -> None:
    data = (
        [{"role": "user", "content": LONG_TEXT}, {"role": "user", "content": "Which region?"}]
        if kind == "messages"
        else [LONG_TEXT, "Cats purr."]
    )
    body = {kind: data, "method": "test_probe", "rate": 0.5, "seed": 11, "protect_numbers": True}
    seen = _last_after(lambda: httpx.post(f"{url}/v1/compress", json=body, timeout=30))
    assert seen["protect_numbers"] is True and seen["seed"] == 11 and seen["deadline"] is not None


@pytest.mark.parametrize("path", ["chat/completions", "completions"])
def test_proxy_passes_protect_numbers_seed_and_the_server_device(url: str, path: str) -> None:
    policy = {"method": "test_probe", "rate": 0.5, "seed": 5, "protect_numbers": True}
    body: dict[str, Any] = {"model": "gpt-4o", "promptshrink": policy}
    if path == "completions":
        body["prompt"] = LONG_TEXT + "\n\nQuestion: Which region had revenue of 103 million?\nAnswer:"
    else:
        body["messages"] = [{"role": "user", "content": LONG_TEXT}, {"role": "user", "content": "Which region?"}]
    seen = _last_after(lambda: httpx.post(f"{url}/v1/{path}", json=body, timeout=30))
    assert seen["protect_numbers"] is True and seen["seed"] == 5
    assert seen["device"] == "cpu" and seen["deadline"] is not None
    if path == "completions":  # split off by the library's split_question, scored against
        assert seen["question"] == "Question: Which region had revenue of 103 million?\nAnswer:"
