"""The gateway routes in front of real servers, driven by real clients: the `anthropic` SDK, LangChain's
`ChatAnthropic` and litellm's Anthropic provider against a LiteLLM proxy (a real Anthropic-format translating
server) in front of `transformers serve`; the `openai` SDK's Responses API against `transformers serve` itself.
Both servers are shared by the session (tests/service/conftest.py, tests/support/upstreams.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import anthropic
import openai
import pytest

from promptshrink.service import Settings
from tests.support.servers import serve
from tests.support.upstreams import AnthropicUpstream, RealUpstream

ROWS = [{"id": i, "city": f"city{i}", "temp_c": 10 + i % 15, "note": "clear skies and light wind"} for i in range(30)]
TOOL_OUTPUT = json.dumps({"results": ROWS})
QUESTION = "What is the temperature in city12?"
ANTHROPIC_TOOLS = [
    {"name": "weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {}}}}
]
CONVERSATION = [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}]},
    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": TOOL_OUTPUT}]},
]
RESPONSES_INPUT = [
    {"role": "user", "content": QUESTION},
    {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "c1", "output": TOOL_OUTPUT},
]


def settings(url: str) -> Settings:
    return Settings(method="keep_first", upstream_base_url=url, upstream_timeout_s=120, compress_threads=1)


@pytest.fixture(scope="module")
def anthropic_proxy(anthropic_upstream: AnthropicUpstream) -> Iterator[str]:
    yield from serve(settings(f"{anthropic_upstream.url}/v1"))


@pytest.fixture(scope="module")
def openai_proxy(real_upstream: RealUpstream) -> Iterator[str]:
    yield from serve(settings(real_upstream.url))


def claude(url: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=url, api_key="sk-caller", max_retries=0, timeout=120)


def test_messages_with_a_long_tool_result_reach_upstream_smaller(
    anthropic_proxy: str, anthropic_upstream: AnthropicUpstream
) -> None:
    kwargs = {"model": anthropic_upstream.model, "max_tokens": 4, "messages": CONVERSATION, "tools": ANTHROPIC_TOOLS}
    direct = claude(anthropic_upstream.url).messages.create(**kwargs)
    raw = claude(anthropic_proxy).messages.with_raw_response.create(**kwargs)
    via = raw.parse()
    assert via.type == "message" and via.role == "assistant" and via.content[0].text
    assert via.usage.input_tokens < direct.usage.input_tokens * 0.6
    assert int(raw.headers["x-promptshrink-tokens-saved"]) > 0


def test_messages_stream(anthropic_proxy: str, anthropic_upstream: AnthropicUpstream) -> None:
    messages = [{"role": "user", "content": "Say hello."}]
    with claude(anthropic_proxy).messages.stream(
        model=anthropic_upstream.model, max_tokens=4, messages=messages
    ) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_message()
    assert types[0] == "message_start" and types[-1] == "message_stop" and "content_block_delta" in types
    assert final.content[0].text and final.stop_reason == "max_tokens"


def test_count_tokens_counts_the_compressed_body(anthropic_proxy: str, anthropic_upstream: AnthropicUpstream) -> None:
    kwargs = {"model": anthropic_upstream.model, "messages": CONVERSATION}
    direct = claude(anthropic_upstream.url).messages.count_tokens(**kwargs)
    via = claude(anthropic_proxy).messages.count_tokens(**kwargs)
    assert 0 < via.input_tokens < direct.input_tokens * 0.6


def test_upstream_error_is_the_same_sdk_error(anthropic_proxy: str, anthropic_upstream: AnthropicUpstream) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(anthropic.APIStatusError) as direct:
        claude(anthropic_upstream.url).messages.create(model="no-such-model", max_tokens=2, messages=messages)
    with pytest.raises(anthropic.APIStatusError) as via:
        claude(anthropic_proxy).messages.create(model="no-such-model", max_tokens=2, messages=messages)
    assert type(via.value) is type(direct.value) and via.value.status_code == direct.value.status_code >= 400
    assert via.value.body == direct.value.body


def test_langchain_chat_anthropic(anthropic_proxy: str, anthropic_upstream: AnthropicUpstream) -> None:
    from langchain_anthropic import ChatAnthropic

    chat = ChatAnthropic(
        model=anthropic_upstream.model, base_url=anthropic_proxy, api_key="sk-caller", max_tokens=4, max_retries=0
    )
    answer = chat.invoke([("human", QUESTION)])
    assert isinstance(answer.content, str) and answer.content
    assert answer.usage_metadata and answer.usage_metadata["input_tokens"] > 0


def test_litellm_anthropic_provider(anthropic_proxy: str, anthropic_upstream: AnthropicUpstream) -> None:
    """litellm's `anthropic/` provider, in a process of its own: importing litellm installs log filters on every
    handler of the process (its secret redaction rewrites uvicorn's access lines), which other tests would see."""
    script = """
import json, sys
import litellm
response = litellm.completion(
    model=sys.argv[1], api_base=sys.argv[2], api_key="sk-caller",
    messages=[{"role": "user", "content": sys.argv[3]}], max_tokens=4,
)
print(json.dumps([response.choices[0].message.content, response.usage.prompt_tokens]))
"""
    args = [f"anthropic/{anthropic_upstream.model}", anthropic_proxy, QUESTION]
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    content, prompt_tokens = json.loads(done.stdout.strip().splitlines()[-1])
    assert content and prompt_tokens > 0


def gpt(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="sk-caller", max_retries=0, timeout=120)


def completed(client: openai.OpenAI, model: str, input: object) -> openai.types.responses.Response:
    """The final response of a streamed Responses call (`transformers serve` streams every Responses call)."""
    events = list(client.responses.create(model=model, input=input, max_output_tokens=4, stream=True))
    assert events[-1].type == "response.completed"
    return events[-1].response


def test_responses_with_a_long_function_output_reach_upstream_smaller(
    openai_proxy: str, real_upstream: RealUpstream
) -> None:
    direct = completed(gpt(real_upstream.url), real_upstream.model, RESPONSES_INPUT)
    via = completed(gpt(f"{openai_proxy}/v1"), real_upstream.model, RESPONSES_INPUT)
    assert via.output_text and via.usage.input_tokens < direct.usage.input_tokens * 0.6


def test_responses_stream_has_the_same_typed_events(openai_proxy: str, real_upstream: RealUpstream) -> None:
    def types(url: str) -> list[str]:
        stream = gpt(url).responses.create(model=real_upstream.model, input="hi", max_output_tokens=3, stream=True)
        return [event.type for event in stream]

    assert types(f"{openai_proxy}/v1") == types(real_upstream.url)


def test_models_and_embeddings_pass_through(openai_proxy: str, real_upstream: RealUpstream) -> None:
    assert [m.id for m in gpt(f"{openai_proxy}/v1").models.list()] == [
        m.id for m in gpt(real_upstream.url).models.list()
    ]
    # `transformers serve` has no embeddings route: the proxy relays its 404 as it is
    for url in (real_upstream.url, f"{openai_proxy}/v1"):
        with pytest.raises(openai.NotFoundError):
            gpt(url).embeddings.create(model=real_upstream.model, input="hello")


CHAT = [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
    {"role": "tool", "tool_call_id": "c1", "content": TOOL_OUTPUT},
]  # fmt: skip


def test_chat_with_a_long_tool_output_shrinks_and_fails_open_whole(
    openai_proxy: str, real_upstream: RealUpstream
) -> None:
    """Chat is on the same policy as the gateway routes: the tool output reaches the upstream smaller; past the
    budget the upstream counts exactly the tokens of the direct call, and the answer still parses."""
    kwargs = {"model": real_upstream.model, "messages": CHAT, "max_tokens": 3, "temperature": 0}
    direct = gpt(real_upstream.url).chat.completions.create(**kwargs)
    via = gpt(f"{openai_proxy}/v1").chat.completions.with_raw_response.create(**kwargs)
    assert via.parse().choices[0].message.content is not None
    assert via.parse().usage.prompt_tokens < direct.usage.prompt_tokens * 0.6
    assert int(via.headers["x-promptshrink-tokens-saved"]) > 0
    late = {"x-promptshrink-budget-ms": "0.001"}
    failed = gpt(f"{openai_proxy}/v1").chat.completions.with_raw_response.create(**kwargs, extra_headers=late)
    assert failed.headers["x-promptshrink-fail-open"] == "timeout"
    assert failed.parse().usage.prompt_tokens == direct.usage.prompt_tokens
