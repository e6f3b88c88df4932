"""The gateway routes (Anthropic Messages, OpenAI Responses, pass-through) against a recording stub upstream, for
what a real upstream cannot produce or show: the exact forwarded body and headers, a 529 overloaded with its
headers, a stream that breaks off, fail-open. The real-upstream side is test_proxy_gateway_real.py."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from promptshrink.service import Settings
from promptshrink.service.app import create_app
from tests.support.servers import ServerThread, Upstream, base_settings, serve
from tests.support.texts import LOG, TOOL_JSON, TOOLS_ANTHROPIC

REQUEST_ID = "req_stub_529"
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
EVENTS = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "stub", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 5, "output_tokens": 0}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                       "usage": {"output_tokens": 2}}),
    ("message_stop", {"type": "message_stop"}),
]  # fmt: skip


def stub_app(calls: list[dict[str, Any]]) -> FastAPI:
    """By model: ``overloaded`` answers 529 with Anthropic's body and headers, ``drop`` breaks the stream off."""
    app = FastAPI()

    @app.api_route("/v1/{path:path}", methods=["GET", "POST", "DELETE"])
    async def any_route(path: str, request: Request) -> Response:
        body = await request.json() if request.method == "POST" else None
        calls.append({"path": path, "method": request.method, "query": request.url.query,
                      "headers": dict(request.headers), "body": body})  # fmt: skip
        model = (body or {}).get("model")
        if model == "overloaded":
            headers = {"request-id": REQUEST_ID, "retry-after": "3", "anthropic-ratelimit-requests-remaining": "0"}
            return JSONResponse(OVERLOADED, 529, headers=headers)
        if path == "messages" and (body or {}).get("stream"):

            async def events() -> Any:
                for i, (name, data) in enumerate(EVENTS):
                    chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                    if model == "drop" and i == 4:
                        yield chunk[:12]
                        raise ConnectionResetError("stub dropped the stream")
                    yield chunk
                    await asyncio.sleep(0)

            return StreamingResponse(events(), media_type="text/event-stream", headers={"request-id": "req_s"})
        if path == "messages":
            message = {**EVENTS[0][1]["message"], "content": [{"type": "text", "text": "stub"}]}
            return JSONResponse(message, headers={"request-id": "req_1"})
        return JSONResponse({"object": "stub", "path": path, "method": request.method})

    return app


@pytest.fixture(scope="module")
def stub() -> Iterator[Upstream]:
    calls: list[dict[str, Any]] = []
    with ServerThread(stub_app(calls)) as server:
        yield Upstream(f"{server.url}/v1", calls)


@pytest.fixture(scope="module")
def proxy(stub: Upstream) -> Iterator[str]:
    yield from serve(base_settings(stub, max_body_bytes=1 << 20))


def client(url: str, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key=kwargs.pop("api_key", "sk-ant-caller"), max_retries=0, **kwargs)


CONVERSATION: list[dict[str, Any]] = copy.deepcopy(TOOLS_ANTHROPIC)
CONVERSATION[2]["content"].append(
    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a"}}
)
TOOLS = [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
SYSTEM = [{"type": "text", "text": "You are terse. " * 50, "cache_control": {"type": "ephemeral"}}]


def test_messages_compress_only_the_tool_result(proxy: str, stub: Upstream) -> None:
    raw = client(proxy).messages.with_raw_response.create(
        model="claude-x",
        max_tokens=5,
        system=SYSTEM,
        messages=CONVERSATION,
        tools=TOOLS,
        metadata={"user_id": "u1"},
        extra_body={"unknown_field": {"kept": True}},
    )
    assert raw.parse().content[0].text == "stub" and raw.headers["request-id"] == "req_1"
    assert int(raw.headers["x-promptshrink-tokens-saved"]) > 0 and "x-promptshrink-compression-ms" in raw.headers
    sent = stub.last()
    assert sent["path"] == "messages" and sent["headers"]["authorization"] == "Bearer sk-ant-caller"
    body = copy.deepcopy(sent["body"])
    result = json.loads(body["messages"][2]["content"][0].pop("content"))
    assert result["status"] == "ok" and len(result["results"]) < 60
    expected = copy.deepcopy(CONVERSATION)
    del expected[2]["content"][0]["content"]
    assert body["messages"] == expected and body["system"] == SYSTEM and body["tools"] == TOOLS
    assert body["metadata"] == {"user_id": "u1"} and body["unknown_field"] == {"kept": True}


def test_credentials_and_beta_headers_are_relayed(proxy: str, stub: Upstream) -> None:
    """The SDK's own credential (``authorization: Bearer``, anthropic 2.x) or an ``x-api-key``, and the version
    and beta headers, reach the upstream as sent."""
    extra = {"anthropic-beta": "prompt-caching-2024-07-31"}
    client(proxy).messages.create(model="m", max_tokens=1, messages=CONVERSATION[:1], extra_headers=extra)
    headers = stub.last()["headers"]
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31" and headers["anthropic-version"]
    assert headers["authorization"] == "Bearer sk-ant-caller" and "x-api-key" not in headers
    body = {"model": "m", "max_tokens": 1, "messages": CONVERSATION[:1]}
    sent = {"x-api-key": "sk-ant-key", "anthropic-version": "2023-06-01"}
    httpx.post(f"{proxy}/v1/messages", json=body, headers=sent, timeout=10).raise_for_status()
    headers = stub.last()["headers"]
    assert headers["x-api-key"] == "sk-ant-key" and headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in headers


def test_service_key_is_never_forwarded(stub: Upstream) -> None:
    settings = base_settings(stub, api_keys=frozenset({"service-key"}), upstream_api_key="sk-server")
    for url in serve(settings):
        with pytest.raises(anthropic.AuthenticationError) as info:
            client(url, api_key="wrong").messages.create(model="m", max_tokens=1, messages=CONVERSATION[:1])
        assert info.value.type == "authentication_error" and "service key" in (info.value.api_message or "")
        client(url, api_key="service-key").messages.create(model="m", max_tokens=1, messages=CONVERSATION[:1])
        headers = stub.last()["headers"]
        assert headers["x-api-key"] == "sk-server" and "authorization" not in headers
        own = client(url, api_key="caller-own", default_headers={"x-api-key": "service-key"})
        own.messages.create(model="m", max_tokens=1, messages=CONVERSATION[:1])
        headers = stub.last()["headers"]
        assert headers["authorization"] == "Bearer caller-own" and "x-api-key" not in headers
        assert "service-key" not in json.dumps(headers)


def test_529_overloaded_keeps_status_body_and_headers(proxy: str) -> None:
    with pytest.raises(anthropic.OverloadedError) as info:
        client(proxy).messages.create(model="overloaded", max_tokens=1, messages=CONVERSATION[:1])
    err = info.value
    assert err.status_code == 529 and err.body == OVERLOADED and err.request_id == REQUEST_ID
    assert err.response.headers["retry-after"] == "3"
    assert err.response.headers["anthropic-ratelimit-requests-remaining"] == "0"


def test_stream_events_are_relayed_in_order(proxy: str) -> None:
    with client(proxy).messages.stream(model="m", max_tokens=5, messages=CONVERSATION) as stream:
        names = [e.type for e in stream if e.type in {n for n, _ in EVENTS}]
        final = stream.get_final_message()
    assert names == [n for n, _ in EVENTS if n != "ping"] and final.content[0].text == "Hi!"
    with httpx.stream("POST", f"{proxy}/v1/messages", json={"model": "m", "max_tokens": 5, "stream": True,
                      "messages": CONVERSATION[:1]}) as r:  # fmt: skip
        raw = r.read()
    assert raw == b"".join(f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in EVENTS)


def test_stream_broken_off_ends_with_an_anthropic_error_event(proxy: str) -> None:
    stream = client(proxy).messages.stream(model="drop", max_tokens=5, messages=CONVERSATION[:1])
    with pytest.raises(anthropic.APIStatusError, match="broke off"), stream as events:
        for _ in events:
            pass


def test_count_tokens_sees_the_compressed_body(proxy: str, stub: Upstream) -> None:
    client(proxy).messages.count_tokens(model="m", messages=CONVERSATION)
    sent = stub.last()
    assert sent["path"] == "messages/count_tokens"
    assert len(sent["body"]["messages"][2]["content"][0]["content"]) < len(TOOL_JSON) / 2


def test_fail_open_on_timeout_forwards_the_original(proxy: str, stub: Upstream) -> None:
    headers = {"x-promptshrink-budget-ms": "0.001"}
    raw = client(proxy).messages.with_raw_response.create(
        model="m", max_tokens=1, messages=CONVERSATION, extra_headers=headers
    )
    assert raw.headers["x-promptshrink-fail-open"] == "timeout" and "x-promptshrink-method" not in raw.headers
    assert stub.last()["body"]["messages"] == CONVERSATION
    with pytest.raises(anthropic.APIStatusError) as info:
        client(proxy).messages.create(
            model="m",
            max_tokens=1,
            messages=CONVERSATION,
            extra_headers={**headers, "x-promptshrink-stop-on-error": "1"},
        )
    assert isinstance(info.value, anthropic.GatewayTimeoutError) and info.value.type == "timeout_error"
    assert info.value.body == {"type": "error", "error": {"type": "timeout_error", "message": info.value.api_message}}
    metrics = httpx.get(f"{proxy}/metrics").text
    assert 'promptshrink_fail_open_total{reason="timeout",route="/v1/messages"}' in metrics


def test_fail_open_on_a_compression_error(proxy: str, stub: Upstream) -> None:
    """A budget the untouched turns already exceed: the library refuses, the original goes upstream."""
    policy = {"promptshrink": {"target_tokens": 2}}
    raw = client(proxy).messages.with_raw_response.create(
        model="m", max_tokens=1, messages=CONVERSATION, extra_body=policy
    )
    assert raw.headers["x-promptshrink-fail-open"] == "budget_unsatisfiable"
    assert stub.last()["body"]["messages"] == CONVERSATION and "promptshrink" not in stub.last()["body"]
    with pytest.raises(anthropic.InternalServerError, match="already need") as info:
        client(proxy).messages.create(
            model="m",
            max_tokens=1,
            messages=CONVERSATION,
            extra_body={"promptshrink": {"target_tokens": 2, "stop_on_error": True}},  # fmt: skip
        )
    assert info.value.status_code == 500 and info.value.type == "api_error"


def test_bad_policy_is_a_400_not_fail_open(proxy: str) -> None:
    for policy in ({"ranges": [{"rate": 2}]}, {"parts": "text"}, {"budget_ms": -1}, {"no_such": 1}):
        with pytest.raises(anthropic.BadRequestError, match="policy"):
            client(proxy).messages.create(
                model="m", max_tokens=1, messages=CONVERSATION, extra_body={"promptshrink": policy}
            )
    with pytest.raises(anthropic.BadRequestError, match="JSON"):
        client(proxy).messages.create(
            model="m", max_tokens=1, messages=CONVERSATION, extra_headers={"x-promptshrink-policy": "{bad"}
        )


def test_route_policy_and_ranges(stub: Upstream) -> None:
    """A per-route policy from the settings: only tool results, and only those of 1000+ tokens, at rate 0.1."""
    small_tool = copy.deepcopy(CONVERSATION)
    small_tool[2]["content"][0]["content"] = "\n".join(LOG.splitlines()[:30])
    long_text = [{"role": "user", "content": "word " * 600}, {"role": "user", "content": "question?"}]
    policies = {"/v1/messages": {"parts": ["tool_result"], "ranges": [{"min_tokens": 1000, "rate": 0.1}]}}
    for url in serve(base_settings(stub, proxy_policies=json.dumps(policies), max_body_bytes=1 << 20)):
        client(url).messages.create(model="m", max_tokens=1, messages=CONVERSATION)
        assert len(stub.last()["body"]["messages"][2]["content"][0]["content"]) < len(TOOL_JSON) / 5
        client(url).messages.create(model="m", max_tokens=1, messages=small_tool)  # under 1000 tokens
        assert stub.last()["body"]["messages"] == small_tool
        client(url).messages.create(model="m", max_tokens=1, messages=long_text)  # text is not a chosen part
        assert stub.last()["body"]["messages"] == long_text
        assert "promptshrink_route_tokens_in_total" in httpx.get(f"{url}/metrics").text


def test_responses_compress_function_call_output(proxy: str, stub: Upstream) -> None:
    items = [
        {"role": "user", "content": "Why did the job fail?"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "logs", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": LOG},
    ]
    sdk = openai.OpenAI(base_url=f"{proxy}/v1", api_key="sk-caller", max_retries=0)
    sdk.responses.with_raw_response.create(
        model="m", input=items, instructions="Be brief. " * 40, previous_response_id="resp_0", store=False
    )
    sent = stub.last()
    assert sent["path"] == "responses" and sent["headers"]["authorization"] == "Bearer sk-caller"
    body = sent["body"]
    assert body["input"][:3] == items[:3] and "ERROR database timeout" in body["input"][3]["output"]
    assert len(body["input"][3]["output"]) < len(LOG) / 5
    assert body["instructions"] == "Be brief. " * 40 and body["previous_response_id"] == "resp_0"
    assert body["store"] is False


def test_pass_through_routes(proxy: str, stub: Upstream) -> None:
    sdk = openai.OpenAI(base_url=f"{proxy}/v1", api_key="sk-caller", max_retries=0)
    for call, path, method in (
        (lambda: sdk.responses.retrieve("resp_1"), "responses/resp_1", "GET"),
        (lambda: sdk.responses.delete("resp_1"), "responses/resp_1", "DELETE"),
        (lambda: sdk.responses.input_items.list("resp_1", limit=3), "responses/resp_1/input_items", "GET"),
        (lambda: sdk.models.list(), "models", "GET"),
    ):
        with contextlib.suppress(openai.APIError, ValueError, TypeError):  # the stub's body is no real object
            call()
        assert (stub.last()["path"], stub.last()["method"]) == (path, method)
        assert stub.last()["headers"]["authorization"] == "Bearer sk-caller"
        assert ("limit=3" in stub.last()["query"]) == path.endswith("input_items")
    long_input = TOOL_JSON * 3
    httpx.post(f"{proxy}/v1/embeddings", json={"model": "e", "input": long_input}, timeout=10).raise_for_status()
    assert stub.last()["body"] == {"model": "e", "input": long_input}
    assert httpx.get(f"{proxy}/v1/responses/..%2F..%2Fadmin", timeout=10).status_code in (404, 422)


def test_chat_tool_message_is_shrunk_by_its_structure(proxy: str, stub: Upstream) -> None:
    """The OpenAI chat route reads messages as ``format="openai"``: a long JSON tool output stays valid JSON."""
    messages = [
        {"role": "user", "content": "What is the temperature in city 42?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
        },  # fmt: skip
        {"role": "tool", "tool_call_id": "c1", "content": TOOL_JSON},
    ]
    openai.OpenAI(base_url=f"{proxy}/v1", api_key="sk", max_retries=0).chat.completions.create(
        model="m", messages=messages
    )
    sent = stub.last()["body"]["messages"]
    assert sent[:2] == messages[:2] and sent[2]["tool_call_id"] == "c1"
    data = json.loads(sent[2]["content"])
    assert "items dropped" in data["results"][-1] and any(r.get("id") == 42 for r in data["results"][:-1])


def test_policy_precedence_route_then_headers_then_body(stub: Upstream) -> None:
    """A route's rate is overridden by the rate header, and a body target_tokens replaces either budget."""
    items = [
        {"role": "user", "content": "Why did the job fail?"},
        {"type": "function_call_output", "call_id": "c1", "output": TOOL_JSON},
    ]
    policies = {"/v1/responses": {"rate": 0.9, "schedule": []}}
    for url in serve(base_settings(stub, proxy_policies=json.dumps(policies), max_body_bytes=1 << 20)):
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="sk", max_retries=0)
        sizes = []
        for extra in ({}, {"extra_headers": {"x-promptshrink-rate": "0.2"}}):
            raw = sdk.responses.with_raw_response.create(model="m", input=items, **extra)
            sizes.append(int(raw.headers["x-promptshrink-compressed-tokens"]))
        assert sizes[1] < sizes[0] / 2
        raw = sdk.responses.with_raw_response.create(
            model="m", input=items, extra_body={"promptshrink": {"target_tokens": 60}}
        )
        assert int(raw.headers["x-promptshrink-compressed-tokens"]) <= 60 + 12  # the question is never cut


def anthropic_error(err: anthropic.APIStatusError, kind: str) -> str:
    """The message of an error in Anthropic's shape of type ``kind`` (asserting the shape)."""
    assert err.body == {"type": "error", "error": {"type": kind, "message": err.api_message}}, err.body
    assert err.type == kind and err.api_message
    return err.api_message


def test_proxy_errors_come_in_anthropic_shape(proxy: str, stub: Upstream) -> None:
    """The proxy's own errors on /v1/messages*: ``{"type": "error", "error": {"type", "message"}}``, so the SDK
    raises the class of the status with the message and type filled in."""
    sdk = client(proxy)
    with pytest.raises(anthropic.BadRequestError) as info:
        sdk.messages.create(model="m", max_tokens=1, messages=CONVERSATION, extra_body={"promptshrink": {"parts": 1}})
    assert "policy" in anthropic_error(info.value, "invalid_request_error")
    deep = json.loads("[" * 100 + "]" * 100)
    with pytest.raises(anthropic.BadRequestError) as info:
        sdk.messages.count_tokens(model="m", messages=CONVERSATION[:1], extra_body={"x": deep})
    assert "64 levels" in anthropic_error(info.value, "invalid_request_error")
    with pytest.raises(anthropic.ContentTooLargeError) as info:
        sdk.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x" * (2 << 20)}])
    assert "bytes" in anthropic_error(info.value, "request_too_large")
    r = httpx.post(f"{proxy}/v1/messages", content=b"{}", headers={"content-type": "text/plain"}, timeout=10)
    assert r.status_code == 415 and r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{proxy}/v1/messages", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    for url in serve(base_settings(stub, upstream_base_url="http://127.0.0.1:9/v1")):
        with pytest.raises(anthropic.InternalServerError) as info:
            client(url).messages.create(model="m", max_tokens=1, messages=CONVERSATION[:1])
        assert info.value.status_code == 502 and info.value.response.headers["x-should-retry"] == "true"
        assert "cannot reach upstream" in anthropic_error(info.value, "api_error")


def test_cors_exposes_every_promptshrink_header(stub: Upstream) -> None:
    """A browser can read each x-promptshrink-* header the proxy sends, compressed or failed open, on each route;
    the exposed list comes from the one list the policy writes them from."""
    from promptshrink.service.policy import RESPONSE_HEADERS

    origin = {"origin": "https://app.example"}
    seen: set[str] = set()
    for url in serve(base_settings(stub, cors_origins=frozenset({origin["origin"]}), max_body_bytes=1 << 20)):
        output = [{"type": "function_call_output", "call_id": "c", "output": LOG}]
        chat = [{"role": "user", "content": LOG}, {"role": "user", "content": "Why?"}]
        calls = [
            ("/v1/messages", {"model": "m", "max_tokens": 1, "messages": CONVERSATION}),
            ("/v1/responses", {"model": "m", "input": output}),
            ("/v1/chat/completions", {"model": "m", "messages": chat}),
        ]
        for path, body in calls:
            for extra in ({}, {"x-promptshrink-budget-ms": "0.001"}):
                r = httpx.post(f"{url}{path}", json=body, headers={**origin, **extra}, timeout=10)
                assert r.status_code == 200, r.text
                exposed = set(r.headers["access-control-expose-headers"].split(", "))
                ours = {h for h in r.headers if h.startswith("x-promptshrink-")}
                assert ours and ours <= exposed, (path, ours - exposed)
                seen |= ours
        preflight = httpx.options(
            f"{url}/v1/responses/resp_1", headers={**origin, "access-control-request-method": "DELETE"}, timeout=10
        )
        assert preflight.status_code == 200 and "DELETE" in preflight.headers["access-control-allow-methods"]
    assert seen == set(RESPONSE_HEADERS)


PRICES = " ".join(f"Item {i} costs {i * 7 + 3} dollars and ships in {i % 9 + 1} days." for i in range(60))


def test_library_options_of_the_policy_reach_the_gateway_routes(proxy: str, stub: Upstream) -> None:
    """``protect_numbers`` (like seed, keep, the server's device) goes through the same code path as on chat:
    every number survives compression on Messages and Responses."""
    numbers = set(re.findall(r"\d+", PRICES))
    messages = [
        {"role": "user", "content": [{"type": "text", "text": PRICES}]},
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "Which item costs 52 dollars?"},
    ]
    items = [{"type": "message", "role": "user", "content": PRICES}, *messages[1:]]
    sdk = openai.OpenAI(base_url=f"{proxy}/v1", api_key="sk", max_retries=0)
    for protect in (False, True):
        policy = {"promptshrink": {"rate": 0.7, "protect_numbers": protect}}
        client(proxy).messages.create(model="m", max_tokens=1, messages=messages, extra_body=policy)
        sent = stub.last()["body"]["messages"][0]["content"][0]["text"]
        sdk.responses.create(model="m", input=items, extra_body=policy)
        sent_items = stub.last()["body"]["input"][0]["content"]
        for text in (sent, sent_items):
            assert len(text) < len(PRICES) * 0.8 and (numbers <= set(re.findall(r"\d+", text))) == protect


@pytest.mark.parametrize(
    ("policies", "says"),
    [
        ("{not json", "is not valid JSON"),
        ('["/v1/messages"]', "must be a JSON object"),
        ('{"/v1/nope": {}}', "unknown route '/v1/nope'"),
        ('{"/v1/responses": 3}', "entry of /v1/responses is not an object"),
        ('{"/v1/messages": {"budget_ms": -1}}', "budget_ms"),
        ('{"/v1/chat/completions": {"rate": 7}}', "rate"),
        ('{"/v1/completions": {"parts": "text"}}', "parts"),
        ('{"/v1/completions": {"surprise": 1}}', "surprise"),
    ],
)
def test_a_bad_route_policy_setting_is_refused_at_start_up(policies: str, says: str) -> None:
    """PROMPTSHRINK_PROXY_POLICIES is checked once when the app is built, naming the problem, instead of every
    proxied request answering 422; a good one builds."""
    with pytest.raises(ValueError, match="PROMPTSHRINK_PROXY_POLICIES") as caught:
        create_app(Settings(proxy_policies=policies))
    assert says in str(caught.value)
    create_app(Settings(proxy_policies='{"/v1/messages": {"parts": ["tool_result"], "rate": 0.3}}'))
