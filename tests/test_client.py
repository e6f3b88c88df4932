"""`PromptShrinkClient` / `AsyncPromptShrinkClient` against the real server: same results as the library."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

import promptshrink
from promptshrink.clients import AsyncPromptShrinkClient, PromptShrinkClient, ServiceError
from tests.service_fixtures import LONG_TEXT, Upstream, base_settings, serve

pytest_plugins = ["tests.service_fixtures"]


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
        assert pres.method == "tfidf" and len(pres.passages) == 2 and pres.result.compressed_tokens > 0
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


def test_retries_on_503_then_succeeds(upstream: Upstream) -> None:
    settings = base_settings(upstream, compress_threads=1, max_queue=0, max_body_bytes=8 << 20, retry_after_s=1)
    slow_text = " ".join(f"word{i}" for i in range(60_000))
    for url in serve(settings):
        blocker = threading.Thread(
            target=httpx.post, args=(f"{url}/v1/compress",), kwargs={"json": {"text": slow_text}}
        )
        blocker.start()
        with PromptShrinkClient(url, max_retries=0) as impatient, PromptShrinkClient(url, max_retries=5) as patient:
            assert any(impatient_busy(impatient) for _ in range(200))
            assert patient.compress(LONG_TEXT, rate=0.5).compressed_tokens > 0
        blocker.join()


def impatient_busy(client: PromptShrinkClient) -> bool:
    """True once the single slot is taken (a call without retries gets 503)."""
    try:
        client.compress("one two three four five six", rate=0.5)
    except ServiceError as exc:
        assert exc.status == 503 and exc.code == "overloaded"
        return True
    return False
