"""Micro-batching in the service: concurrent requests for an LM-scored method share one batch, with the same
results as one-by-one compression, and /metrics shows batch sizes and queue wait."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

import promptshrink
from tests.support.models import needs_lm
from tests.support.servers import Upstream, base_settings, serve

TEXTS = [
    f"Report {i}: the council met on Tuesday to discuss the budget for region {i}. Roads and schools were the main "
    f"items, and the mayor promised a decision within {i + 2} weeks after a public hearing in the town hall."
    for i in range(6)
]


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, name
    return float(match.group(1))


@needs_lm
def test_concurrent_requests_are_batched_with_one_by_one_results(upstream: Upstream, monkeypatch) -> None:
    monkeypatch.setenv("PROMPTSHRINK_DTYPE", "float32")  # bf16 sums depend on the batch shape
    question = "When will the mayor decide?"
    alone = [promptshrink.compress(t, "selective_context", rate=0.5, question=question).text for t in TEXTS]
    settings = base_settings(upstream, method="selective_context", batch_wait_ms=500.0, compress_threads=1, warmup=True)
    for url in serve(settings):

        async def fire(url: str, question: str) -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=300) as client:
                bodies = [{"text": t, "rate": 0.5, "question": question} for t in TEXTS]
                return await asyncio.gather(*(client.post("/v1/compress", json=b) for b in bodies))

        responses = asyncio.run(fire(url, question))
        assert [r.status_code for r in responses] == [200] * len(TEXTS)
        assert [r.json()["text"] for r in responses] == alone
        scraped = httpx.get(f"{url}/metrics").text
        batches = metric(scraped, "promptshrink_batch_size_count")
        assert metric(scraped, "promptshrink_batch_size_sum") == len(TEXTS)
        assert batches < len(TEXTS)  # at least two requests shared a batch
        assert metric(scraped, "promptshrink_batch_wait_seconds_count") == len(TEXTS)


def test_model_free_methods_are_not_batched(upstream: Upstream) -> None:
    for url in serve(base_settings(upstream, batch_wait_ms=50.0)):
        r = httpx.post(f"{url}/v1/compress", json={"text": TEXTS[0], "rate": 0.5}, timeout=30)
        assert r.status_code == 200
        assert metric(httpx.get(f"{url}/metrics").text, "promptshrink_batch_size_count") == 0


@pytest.mark.parametrize("wait", [0.0])
def test_batching_can_be_turned_off(upstream: Upstream, wait: float) -> None:
    for url in serve(base_settings(upstream, method="keep_first", batch_wait_ms=wait)):
        assert httpx.post(f"{url}/v1/compress", json={"text": TEXTS[1], "rate": 0.5}, timeout=30).status_code == 200
