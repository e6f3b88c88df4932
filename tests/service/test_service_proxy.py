"""The OpenAI-compatible proxy, driven by the real `openai` SDK against a recording stub upstream (the tests marked
``plain_and_ray`` also through Ray Serve)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import httpx
import openai
import pytest

from promptshrink.errors import InvalidInputError
from promptshrink.service import Settings, create_app
from tests.support.servers import (
    ERROR_HEADERS,
    STREAM_CHUNKS,
    UPSTREAM_KEY,
    Upstream,
    base_settings,
    plain_and_ray,
    serve,
    sse_chunks,
)
from tests.support.texts import LONG_TEXT

MESSAGES = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": LONG_TEXT},
    {"role": "user", "content": "Which region had revenue of 103 million?"},
]


def sdk(url: str, **kwargs: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=kwargs.pop("api_key", "sk-caller"), max_retries=0, **kwargs)


@plain_and_ray
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


@plain_and_ray
def test_sdk_streaming_relays_sse_unchanged(server: str, upstream: Upstream) -> None:
    stream = sdk(server).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == "".join(STREAM_CHUNKS)
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert int(r.headers["x-promptshrink-tokens-saved"]) > 0
        assert r.read() == b"".join(sse_chunks("gpt-4o"))


@plain_and_ray
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
    with pytest.raises(openai.BadRequestError, match="rate"):
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers={"x-promptshrink-rate": "2"})


@plain_and_ray
def test_sdk_legacy_completions(server: str, upstream: Upstream) -> None:
    out = sdk(server).completions.create(model="gpt-3.5-turbo-instruct", prompt=LONG_TEXT)
    assert out.choices[0].text == "stub answer"
    assert len(upstream.last()["body"]["prompt"]) < len(LONG_TEXT) * 0.6


def test_no_server_key_without_service_keys(upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    """The server's upstream key is never spent for anonymous callers unless the operator opts in (with a warning)."""
    with pytest.raises(InvalidInputError, match="PROMPTSHRINK_API_KEYS"):
        create_app(base_settings(upstream, upstream_api_key=UPSTREAM_KEY))
    with caplog.at_level(logging.WARNING, logger="promptshrink.service"):
        opted_in = base_settings(upstream, upstream_api_key=UPSTREAM_KEY, allow_anonymous_upstream_key=True)
        for url in serve(opted_in):
            httpx.post(f"{url}/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES})
            assert upstream.last()["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert "unauthenticated callers" in caplog.text


def test_serve_refuses_an_open_upstream_key() -> None:
    env = {**os.environ, "PROMPTSHRINK_UPSTREAM_API_KEY": "sk-x", "PROMPTSHRINK_WARMUP": "0"}
    env.pop("PROMPTSHRINK_API_KEYS", None)
    done = subprocess.run(
        [sys.executable, "-m", "promptshrink.cli", "serve", "--method", "keep_first", "--port", "9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "PROMPTSHRINK_ALLOW_ANONYMOUS_UPSTREAM_KEY" in done.stderr
    assert "Traceback" not in done.stderr


@plain_and_ray
def test_anonymous_caller_forwards_only_its_own_key(server: str, upstream: Upstream) -> None:
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES})
    assert r.status_code == 200 and "authorization" not in upstream.last()["headers"]


def test_auth_server_keeps_service_key_private(auth_server: str, upstream: Upstream) -> None:
    with pytest.raises(openai.AuthenticationError):
        sdk(auth_server).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    sdk(auth_server, api_key="service-key").chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert upstream.last()["headers"]["authorization"] == f"Bearer {UPSTREAM_KEY}"
    own = sdk(auth_server, default_headers={"x-api-key": "service-key"})
    own.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert upstream.last()["headers"]["authorization"] == "Bearer sk-caller"


# Not on Ray Serve: Ray's proxy appends its own id to the upstream's x-request-id.
@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
def test_upstream_errors_are_relayed_as_they_are(server: str, upstream: Upstream, status: int, error: type) -> None:
    """Status, body and the retry/rate-limit/request-id headers come through, so SDKs raise what they raise direct."""
    for stream in (False, True):
        with pytest.raises(error) as via_proxy:
            sdk(server).chat.completions.create(model=f"fail-{status}", messages=MESSAGES, stream=stream)
        with pytest.raises(error) as direct:
            sdk(upstream.url.removesuffix("/v1")).chat.completions.create(model=f"fail-{status}", messages=MESSAGES)
        assert via_proxy.value.status_code == direct.value.status_code == status
        assert (
            via_proxy.value.body
            == direct.value.body
            == {
                "message": f"stub failure {status}",
                "type": "invalid_request_error",
                "code": "stub",
            }
        )
        headers = via_proxy.value.response.headers
        assert {k: headers.get(k) for k in ERROR_HEADERS} == ERROR_HEADERS


def test_tools_and_tool_messages_pass_through(server: str, upstream: Upstream) -> None:
    """Tool definitions, tool calls and tool results reach the upstream unchanged; only long prose is compressed."""
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": LONG_TEXT},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21}'},
            {"role": "user", "content": "And tomorrow?"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    assert httpx.post(f"{server}/v1/chat/completions", json=body).status_code == 200
    sent = upstream.last()["body"]
    assert {k: sent[k] for k in ("tools", "tool_choice", "parallel_tool_calls")} == {
        k: body[k] for k in ("tools", "tool_choice", "parallel_tool_calls")
    }
    assert sent["messages"][1:] == body["messages"][1:] and len(sent["messages"][0]["content"]) < len(LONG_TEXT)


def test_set_cookie_never_reaches_other_callers(server: str, upstream: Upstream) -> None:
    first = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": "cookie", "messages": MESSAGES},
        headers={"authorization": "Bearer sk-caller-a"},
    )
    assert first.status_code == 200 and "set-cookie" not in first.headers
    assert "set-cookie" in httpx.post(f"{upstream.url}/chat/completions", json={"model": "cookie"}).headers
    httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"authorization": "Bearer sk-caller-b"},
    )
    assert "cookie" not in upstream.last()["headers"]


def test_model_field_never_loads_a_tokenizer(server: str, upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """``model: hf:...`` (hub id or path) only names the upstream model; the budget falls back to cl100k_base."""
    from promptshrink import model_loading

    loads: list[str] = []
    monkeypatch.setattr(model_loading, "load_tokenizer", lambda name: loads.append(name))
    for model in ("hf:gpt2", "hf:/etc", "hf:/no/such/dir"):
        r = httpx.post(f"{server}/v1/chat/completions", json={"model": model, "messages": MESSAGES})
        assert r.status_code == 200 and upstream.last()["body"]["model"] == model
    assert loads == []
    r = httpx.post(
        f"{server}/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES},
        headers={"x-promptshrink-tokenizer": "hf:gpt2"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_tokenizer" and loads == []


def test_legacy_model_tokenizer_is_offline(server: str, upstream: Upstream) -> None:
    """text-davinci-003 counts in the bundled p50k_base (no download): the budget holds in that tokenizer."""
    from promptshrink import get_tokenizer

    r = sdk(server).completions.with_raw_response.create(
        model="text-davinci-003", prompt=LONG_TEXT, extra_body={"promptshrink": {"target_tokens": 120}}
    )
    sent = upstream.last()["body"]["prompt"]
    counted = int(r.headers["x-promptshrink-compressed-tokens"])
    assert r.http_response.status_code == 200 and 0 < counted <= 120
    assert get_tokenizer("p50k_base").count(sent) == counted != get_tokenizer("cl100k_base").count(sent)


def test_stream_broken_off_mid_way(server: str, upstream: Upstream, caplog: pytest.LogCaptureFixture) -> None:
    """A dropped upstream stream: complete events are relayed, then one SSE error event, one log line, a metric."""
    with caplog.at_level(logging.WARNING, logger="promptshrink.service"):
        stream = sdk(server).chat.completions.create(model="drop", messages=MESSAGES, stream=True)
        got = []
        with pytest.raises(openai.APIError, match="upstream stream broke off"):
            for chunk in stream:
                got.append(chunk.choices[0].delta.content)
        assert got == STREAM_CHUNKS[:2]
        body = {"model": "drop", "messages": MESSAGES, "stream": True}
        with httpx.stream("POST", f"{server}/v1/chat/completions", json=body) as r:
            raw = r.read()
    events = raw.split(b"\n\n")
    assert raw.startswith(b"".join(sse_chunks("drop")[:2])) and events[-1] == b""
    assert json.loads(events[-2].removeprefix(b"data: "))["error"]["code"] == "upstream_stream_broken"
    ours = [r for r in caplog.records if r.name == "promptshrink.service" and r.levelno >= logging.WARNING]
    assert [r.getMessage().startswith("upstream stream broke off") for r in ours] == [True, True]
    assert not any(r.exc_info for r in ours)
    metrics = httpx.get(f"{server}/metrics").text
    assert 'promptshrink_errors_total{code="upstream_stream_broken"} 2.0' in metrics


@plain_and_ray
def test_upstream_timeout_is_504(server: str) -> None:
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": "slow", "messages": MESSAGES}, timeout=10)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert r.headers["x-should-retry"] == "true"


def test_bad_proxy_bodies(server: str, upstream: Upstream) -> None:
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": "gpt-4o", "messages": "hello"})
    assert r.status_code == 400
    r = httpx.post(f"{server}/v1/chat/completions", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400
    unreachable = base_settings(upstream, upstream_base_url="http://127.0.0.1:9/v1")
    for url in serve(unreachable):
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES})
        assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_unreachable"
        assert r.headers["x-should-retry"] == "true"


FACT = "The vault code for the Nimbus archive is 7731."
_PARTS = LONG_TEXT.split(" Paragraph ")
CONTEXT = " Paragraph ".join(_PARTS[:20]) + " " + FACT + " Paragraph " + " Paragraph ".join(_PARTS[20:])
TFIDF_30 = {"promptshrink": {"method": "tfidf", "rate": 0.3}}


def test_completions_keep_the_trailing_question(server: str, upstream: Upstream) -> None:
    """A legacy prompt ending in "Question: ... Answer:": the tail survives verbatim and steers the compression."""
    tail = "\n\nQuestion: What is the vault code for the Nimbus archive?\nAnswer:"
    prompt = "Read the report.\n\n" + CONTEXT + tail
    sdk(server).completions.create(model="gpt-3.5-turbo-instruct", prompt=prompt, extra_body=TFIDF_30)
    sent = upstream.last()["body"]["prompt"]
    assert sent.endswith(tail) and FACT in sent and len(sent) < len(prompt) * 0.5


def test_one_user_message_with_context_and_question(server: str, upstream: Upstream) -> None:
    """The usual RAG template in one user message: the context is compressed for the question, which is kept."""
    question = "\n\nWhich code opens the vault of the Nimbus archive?"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Use the context to answer.\n\nContext:\n" + CONTEXT + question},
    ]
    raw = sdk(server).chat.completions.with_raw_response.create(model="gpt-4o", messages=messages, extra_body=TFIDF_30)
    sent = upstream.last()["body"]["messages"]
    assert sent[0] == messages[0] and len(sent) == 2 and sent[1]["role"] == "user"
    assert sent[1]["content"].endswith(question) and FACT in sent[1]["content"]
    assert len(sent[1]["content"]) < len(messages[1]["content"]) * 0.5
    assert int(raw.headers["x-promptshrink-tokens-saved"]) > 0


def test_question_markers_are_configurable(server: str, upstream: Upstream) -> None:
    tail = "\n\nFrage: Give the vault code for the Nimbus archive."
    policy = {"method": "tfidf", "rate": 0.3, "question_markers": ["Frage:"]}
    sdk(server).completions.create(model="gpt-4o", prompt=CONTEXT + tail, extra_body={"promptshrink": policy})
    assert upstream.last()["body"]["prompt"].endswith(tail)
    policy["split_question"] = False
    sdk(server).completions.create(model="gpt-4o", prompt=CONTEXT + tail, extra_body={"promptshrink": policy})
    assert not upstream.last()["body"]["prompt"].endswith(tail)
    with pytest.raises(openai.BadRequestError, match="question_markers"):
        policy["question_markers"] = ["Frage:"] * 33
        sdk(server).completions.create(model="gpt-4o", prompt=CONTEXT + tail, extra_body={"promptshrink": policy})
    settings = Settings.from_env({"PROMPTSHRINK_PROXY_QUESTION_MARKERS": "Frage:, Pregunta:"})
    assert settings.proxy_question_markers == {"Frage:", "Pregunta:"}


TOOL_TURN = [
    {"role": "user", "content": LONG_TEXT},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "report", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": LONG_TEXT},
    {"role": "user", "content": "Which region had revenue of 103 million?"},
]  # fmt: skip


def test_chat_and_completions_fail_open(server: str, upstream: Upstream) -> None:
    """Past the budget or on a compression error the original body goes upstream, named in a header and counted;
    ``stop_on_error`` answers 5xx in OpenAI's error shape instead."""
    client = sdk(server)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.headers["x-promptshrink-method"] == "keep_first" and "x-promptshrink-fail-open" not in raw.headers
    raw = client.completions.with_raw_response.create(model="gpt-4o", prompt=LONG_TEXT)
    assert float(raw.headers["x-promptshrink-compression-ms"]) > 0 and "x-promptshrink-fail-open" not in raw.headers
    late = {"x-promptshrink-budget-ms": "0.001"}
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, extra_headers=late)
    assert raw.headers["x-promptshrink-fail-open"] == "timeout" and "x-promptshrink-method" not in raw.headers
    assert upstream.last()["body"] == {"model": "gpt-4o", "messages": MESSAGES}
    raw = client.completions.with_raw_response.create(model="gpt-4o", prompt=LONG_TEXT, extra_headers=late)
    assert raw.headers["x-promptshrink-fail-open"] == "timeout" and upstream.last()["body"]["prompt"] == LONG_TEXT
    unsatisfiable = {"promptshrink": {"target_tokens": 2}}  # the kept question alone needs more
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES, extra_body=unsatisfiable)
    assert raw.headers["x-promptshrink-fail-open"] == "budget_unsatisfiable"
    assert upstream.last()["body"] == {"model": "gpt-4o", "messages": MESSAGES}
    with pytest.raises(openai.InternalServerError) as info:
        client.completions.create(
            model="gpt-4o", prompt=LONG_TEXT, extra_headers={**late, "x-promptshrink-stop-on-error": "1"}
        )
    assert info.value.status_code == 504 and info.value.code == "timeout" and info.value.type == "server_error"
    stop = {"promptshrink": {"target_tokens": 2, "stop_on_error": True}}
    with pytest.raises(openai.InternalServerError, match="already need") as info:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_body=stop)
    assert info.value.status_code == 500 and info.value.code == "compression_failed"
    metrics = httpx.get(f"{server}/metrics").text
    for route in ("/v1/chat/completions", "/v1/completions"):
        assert f'promptshrink_fail_open_total{{reason="timeout",route="{route}"}}' in metrics
        assert f'promptshrink_route_tokens_in_total{{model="gpt-4o",route="{route}"}}' in metrics
    assert (
        'promptshrink_route_compression_seconds_count{method="keep_first",model="gpt-4o",route="/v1/chat/comp'
        in metrics
    )


def test_chat_and_completions_follow_the_route_policy(upstream: Upstream) -> None:
    """The same policy as the gateway routes: parts (chat: only tool outputs), ranges and the minimum size."""
    policies = {
        "/v1/chat/completions": {"parts": ["tool"], "tool_min_chars": 100},
        "/v1/completions": {"ranges": [{"min_tokens": 1000, "rate": 0.1}]},
    }
    for url in serve(base_settings(upstream, proxy_policies=json.dumps(policies))):
        client = sdk(url)
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=TOOL_TURN)
        sent = upstream.last()["body"]["messages"]
        assert sent[:2] == TOOL_TURN[:2] and sent[3] == TOOL_TURN[3] and len(sent[2]["content"]) < len(LONG_TEXT) * 0.7
        assert float(raw.headers["x-promptshrink-compression-ms"]) >= 0
        client.completions.create(model="gpt-4o", prompt=[LONG_TEXT, LONG_TEXT[:3000]])
        long, short = upstream.last()["body"]["prompt"]
        assert len(long) < len(LONG_TEXT) * 0.2 and short == LONG_TEXT[:3000]  # under 1000 tokens: no range
        client.completions.create(model="gpt-4o", prompt=LONG_TEXT, extra_body={"promptshrink": {"parts": ["tool"]}})
        assert upstream.last()["body"]["prompt"] == LONG_TEXT  # a prompt is text, not a chosen part
        small = {"promptshrink": {"min_tokens": 5000, "budget_ms": 5000, "ranges": None}}
        client.completions.create(model="gpt-4o", prompt=LONG_TEXT, extra_body=small)
        assert upstream.last()["body"]["prompt"] == LONG_TEXT
        with pytest.raises(openai.BadRequestError, match="promptshrink.parts"):
            client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_body={"promptshrink": {"parts": 1}})


def test_proxy_errors_come_in_openai_shape(server: str, auth_server: str, upstream: Upstream) -> None:
    """The proxy's own errors on the OpenAI routes: ``{"error": {"message", "type", "param", "code"}}``, so the
    SDK raises the class for the status with ``code``, ``type`` and ``param`` filled in."""
    client = sdk(server)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="gpt-4o", messages="hello")  # type: ignore[arg-type]
    err = info.value
    assert (err.code, err.type, err.param) == ("invalid_request", "invalid_request_error", "messages")
    assert set(err.body) >= {"message", "type", "param", "code"}  # type: ignore[arg-type]
    deep = json.loads("[" * 100 + "]" * 100)
    with pytest.raises(openai.BadRequestError, match="64 levels") as info:
        client.responses.create(model="m", input="hi", extra_body={"x": deep})
    assert info.value.code == "too_deep" and info.value.type == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as info:
        client.completions.create(model="m", prompt="x" * 300_000)
    assert info.value.status_code == 413 and info.value.code == "body_too_large"
    with pytest.raises(openai.AuthenticationError) as info:
        sdk(auth_server, api_key="wrong").responses.create(model="m", input="hi")
    assert info.value.type == "authentication_error" and "API key" in info.value.message
    for url in serve(base_settings(upstream, upstream_base_url="http://127.0.0.1:9/v1")):
        for call in (
            lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES),
            lambda c: c.responses.create(model="m", input="hi"),
        ):
            with pytest.raises(openai.InternalServerError, match="cannot reach upstream") as info:
                call(sdk(url))
            assert info.value.status_code == 502 and info.value.code == "upstream_unreachable"
            assert info.value.type == "server_error" and info.value.response.headers["x-should-retry"] == "true"
    r = httpx.post(f"{server}/v1/compress", json={"text": LONG_TEXT, "method": "nope"})
    assert r.json() == {"error": {"code": "unknown_method", "message": r.json()["error"]["message"]}}  # own shape
