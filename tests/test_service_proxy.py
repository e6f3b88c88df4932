"""The OpenAI-compatible proxy, driven by the real `openai` SDK against a recording stub upstream."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.service_fixtures import LONG_TEXT, STREAM_CHUNKS, UPSTREAM_KEY, Upstream, base_settings, serve, sse_chunks

pytest_plugins = ["tests.service_fixtures"]
MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": LONG_TEXT},
    {"role": "user", "content": "Which region had revenue of 103 million?"},
]


def sdk(url: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=kwargs.pop("api_key", "sk-caller"), max_retries=0, **kwargs)


def test_sdk_chat_is_compressed_before_upstream(server: str, upstream: Upstream) -> None:
    raw = sdk(server).chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    completion = raw.parse()
    assert completion.choices[0].message.content == "stub answer"
    sent = upstream.last()
    assert sent["path"] == "/v1/chat/completions" and sent["headers"]["authorization"] == "Bearer sk-caller"
    forwarded = sent["body"]["messages"]
    assert forwarded[0] == MESSAGES[0] and forwarded[2] == MESSAGES[2]
    assert len(forwarded[1]["content"]) < len(LONG_TEXT) * 0.6 and LONG_TEXT.startswith(forwarded[1]["content"])
    saved = int(raw.headers["x-promptshrink-tokens-saved"])
    assert saved > 0 and saved == int(raw.headers["x-promptshrink-original-tokens"]) - int(
        raw.headers["x-promptshrink-compressed-tokens"]
    )


def test_sdk_streaming_relays_sse_unchanged(server: str, upstream: Upstream) -> None:
    stream = sdk(server).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "".join(STREAM_CHUNKS)
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert int(r.headers["x-promptshrink-tokens-saved"]) > 0
        assert r.read() == b"".join(sse_chunks("gpt-4o"))


def test_policy_from_body_field_and_headers(server: str, upstream: Upstream) -> None:
    client = sdk(server)
    client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, extra_body={"promptshrink": {"method": "tfidf", "target_tokens": 100}}
    )
    sent = upstream.last()["body"]
    assert "promptshrink" not in sent
    assert len(sent["messages"][1]["content"]) < len(LONG_TEXT) / 3
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=MESSAGES, extra_headers={"x-promptshrink-compress": "false"}
    )
    assert upstream.last()["body"]["messages"] == MESSAGES and "x-promptshrink-tokens-saved" not in raw.headers
    with pytest.raises(openai.UnprocessableEntityError, match="rate"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"x-promptshrink-rate": "2"})


def test_sdk_legacy_completions(server: str, upstream: Upstream) -> None:
    out = sdk(server).completions.create(model="gpt-3.5-turbo-instruct", prompt=LONG_TEXT)
    assert out.choices[0].text == "stub answer"
    assert len(upstream.last()["body"]["prompt"]) < len(LONG_TEXT) * 0.6


def test_server_key_used_when_caller_sends_none(server: str, upstream: Upstream) -> None:
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES})
    assert r.status_code == 200 and upstream.last()["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_auth_server_keeps_service_key_private(auth_server: str, upstream: Upstream) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(auth_server).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    sdk(auth_server, api_key="service-key").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert upstream.last()["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    own = sdk(auth_server, default_headers={"x-api-key": "service-key"})
    own.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert upstream.last()["headers"]["authorization"] == "Bearer sk-caller"


@pytest.mark.parametrize(("status", "retry"), [(400, "false"), (401, "false"), (429, "true"), (500, "true")])
def test_upstream_errors_are_502_with_upstream_status(server: str, status: int, retry: str) -> None:
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": f"fail-{status}", "messages": MESSAGES})
    assert r.status_code == 502 and r.headers["x-upstream-status"] == str(status)
    assert r.headers["x-should-retry"] == retry
    error = r.json()["error"]
    assert error["code"] == "upstream_error" and error["upstream_status"] == status
    assert error["message"] == f"upstream returned {status}: stub failure {status}"
    with pytest.raises(openai.InternalServerError) as info:
        sdk(server).chat.completions.create(model=f"fail-{status}", messages=MESSAGES, stream=True)
    assert info.value.status_code == 502 and f"stub failure {status}" in str(info.value)


def test_upstream_timeout_is_504(server: str) -> None:
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": "slow", "messages": MESSAGES}, timeout=10)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"


def test_bad_proxy_bodies(server: str, upstream: Upstream) -> None:
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": "gpt-4o", "messages": "hello"})
    assert r.status_code == 422
    r = httpx.post(f"{server}/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400
    unreachable = base_settings(upstream, upstream_base_url="http://127.0.0.1:9/v1")
    for url in serve(unreachable):
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES})
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
