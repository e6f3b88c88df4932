"""`PromptShrinkClient` / `AsyncPromptShrinkClient` against the real server: same results as the library."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import promptshrink
from promptshrink.clients import AsyncPromptShrinkClient, PromptShrinkClient, ServiceError
from tests.support.gate import Gate
from tests.support.servers import Upstream, base_settings, serve
from tests.support.texts import LONG_TEXT


def test_sync_client_matches_library(server: str) -> None:
    with PromptShrinkClient(server) as client:
        remote = client.compress(LONG_TEXT, "tfidf", rate=0.4, question="revenue of region 2", include_segments=True)
        local = promptshrink.compress(LONG_TEXT, "tfidf", rate=0.4, question="revenue of region 2")
        assert isinstance(remote, promptshrink.CompressionResult)
        assert (remote.text, remote.compressed_tokens, remote.ratio) == (
            local.text,
            local.compressed_tokens,
            local.ratio,
        )
        assert [s.kept for s in remote.segments] == [s.kept for s in local.segments]
        assert client.compress(LONG_TEXT, rate=0.2).method == "keep_first"  # the server's default
        messages = [{"role": "user", "content": LONG_TEXT}, {"role": "user", "content": "region 4?"}]
        mres = client.compress_messages(messages, "keep_first", target_tokens=100)
        assert mres.messages[1] == messages[1] and mres.per_message[0] is not None and mres.per_message[1] is None
        pres = client.compress_passages(["Cats purr.", LONG_TEXT], "revenue", rate=0.3)
        assert pres.method == "keep_first"  # the server's default, as for compress (the client used to send tfidf)
        assert len(pres.passages) == 2 and pres.result.compressed_tokens > 0
        batch = client.compress_batch([{"text": LONG_TEXT}, {"text": ""}])
        assert isinstance(batch[0], promptshrink.CompressionResult) and isinstance(batch[1], ServiceError)
        assert client.ready() and "tfidf" in {m["name"] for m in client.methods()["methods"]}


def test_errors_are_library_errors(server: str, auth_server: str) -> None:
    with PromptShrinkClient(server) as client:
        with pytest.raises(promptshrink.InvalidInputError, match="empty"):
            client.compress("  ")
        with pytest.raises(promptshrink.UnknownMethodError):
            client.compress("text", "nope")
        with pytest.raises(promptshrink.UnknownTokenizerError):
            client.compress("text", tokenizer="nope")
        with pytest.raises(ServiceError) as info:
            client.compress("text", target_tokens=0)
        assert info.value.status == 422
    with PromptShrinkClient(auth_server) as client, pytest.raises(ServiceError) as info:
        client.compress(LONG_TEXT)
    assert info.value.status == 401
    with PromptShrinkClient(auth_server, api_key="service-key") as client:
        assert client.compress(LONG_TEXT).compressed_tokens > 0


def test_async_client(server: str) -> None:
    async def main() -> None:
        async with AsyncPromptShrinkClient(server) as client:
            results = await asyncio.gather(*(client.compress(LONG_TEXT, "keep_last", rate=r) for r in (0.2, 0.5)))
            assert [r.method for r in results] == ["keep_last", "keep_last"]
            assert results[0].compressed_tokens < results[1].compressed_tokens
            pres = await client.compress_passages(["a b c.", LONG_TEXT], "revenue", target_tokens=50)
            assert pres.compressed_tokens <= 60
            with pytest.raises(promptshrink.BudgetError):
                await client.compress(LONG_TEXT, "keep_first", target_tokens=2, keep=[LONG_TEXT[:200]])
            assert await client.ready()

    asyncio.run(main())


def test_retries_on_503_then_succeeds(upstream: Upstream, gate: type[Gate]) -> None:
    """One slot, held by the gate method until the patient client has been refused at least once."""
    allowed = frozenset({"keep_first", gate.name})
    settings = base_settings(upstream, methods=allowed, compress_threads=1, max_queue=0, retry_after_s=1, warmup=False)
    for url in serve(settings):
        with ThreadPoolExecutor(2) as pool:
            blocker = pool.submit(httpx.post, f"{url}/v1/compress", json={"text": LONG_TEXT, "method": gate.name})
            assert gate.started.wait(10)
            with PromptShrinkClient(url, max_retries=0) as impatient, pytest.raises(ServiceError) as info:
                impatient.compress("one two three four five six", rate=0.5)
            assert info.value.status == 503 and info.value.code == "overloaded"
            refused = overloaded(url)
            with PromptShrinkClient(url, max_retries=5) as patient:
                patiently = pool.submit(patient.compress, LONG_TEXT, rate=0.5)
                while overloaded(url) == refused:  # the patient client got its first 503 ...
                    time.sleep(0.01)
                gate.release.set()  # ... and retries after Retry-After, now with a free slot
                assert patiently.result(timeout=30).compressed_tokens > 0
            assert blocker.result().status_code == 200


def overloaded(url: str) -> float:
    """How many 503 'overloaded' answers the server has given."""
    line = [ln for ln in httpx.get(f"{url}/metrics").text.splitlines() if 'code="overloaded"' in ln and "_total" in ln]
    return float(line[0].split()[-1]) if line else 0.0
