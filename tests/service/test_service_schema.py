"""Property-based requests against the real server: bodies generated from the served OpenAPI schema (valid and
invalid) and a hypothesis fuzz of valid bodies. No operation may answer a server error."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

FAST_METHODS = ["keep_first", "keep_last", "random", "tfidf"]


@pytest.fixture(scope="module")
def api_schema(plain_server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{plain_server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_no_server_errors(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error], timeout=10)


def test_schema_says_exactly_one_input_and_this_servers_methods(server: str) -> None:
    spec = httpx.get(f"{server}/openapi.json").json()
    body = spec["paths"]["/v1/compress"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = [branch["$ref"].rsplit("/", 1)[1] for branch in body["oneOf"]]
    assert refs == ["TextRequest", "MessagesRequest", "PassagesRequest"]
    models = spec["components"]["schemas"]
    for name, field in zip(refs, ("text", "messages", "passages")):
        assert field in models[name]["required"] and models[name]["additionalProperties"] is False
        assert models[name]["properties"]["method"]["anyOf"][0]["enum"] == FAST_METHODS


def test_schema_generated_valid_bodies_are_accepted(api_schema: schemathesis.BaseSchema) -> None:
    """Positive cases from the schema (a fixed, derandomized sample): never a server error, and many are compressed
    (before the tagged union, none of them was; the rest are 422s for free-form fields such as the tokenizer)."""
    statuses: Counter[int] = Counter()

    @given(case=api_schema["/v1/compress"]["POST"].as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    def call(case: schemathesis.Case) -> None:
        response = case.call(timeout=20)
        assert response.status_code < 500, response.text
        statuses[response.status_code] += 1

    call()
    assert statuses[200] >= sum(statuses.values()) // 5, statuses


# --- hypothesis fuzz of valid bodies ---------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), min_size=1, max_size=400).filter(str.strip)
OPTIONS: dict[str, Any] = {
    "method": st.sampled_from(FAST_METHODS),
    "tokenizer": st.sampled_from(["cl100k_base", "o200k_base", "gpt-4o", "gpt-4"]),
    "question": TEXT,
    "keep": st.lists(st.text(min_size=1, max_size=8), max_size=4),
    "protect_numbers": st.booleans(),
    "seed": st.integers(0, 2**32 - 1),
    "include_segments": st.booleans(),
    "options": st.fixed_dictionaries({}, optional={"unit": st.sampled_from(["token", "word", "sentence"])}),
}
BUDGET = st.one_of(
    st.fixed_dictionaries({"rate": st.floats(0.01, 1.0)}),
    st.fixed_dictionaries({"target_tokens": st.integers(1, 500)}),
    st.just({}),
)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": TEXT},
    optional={"name": st.sampled_from(["alice", "bob"])},
)
PASSAGE = st.one_of(TEXT, st.fixed_dictionaries({"text": TEXT}, optional={"id": st.text(max_size=5)}))
INPUT = st.one_of(
    st.fixed_dictionaries({"text": TEXT}),
    st.fixed_dictionaries(
        {"messages": st.lists(MESSAGE, min_size=1, max_size=4)},
        optional={"min_tokens": st.integers(0, 40), "skip_last_user": st.booleans()},
    ),
    st.fixed_dictionaries({"passages": st.lists(PASSAGE, min_size=1, max_size=4)}),
)
BODY = st.builds(
    lambda inp, budget, extra: {**inp, **budget, **extra}, INPUT, BUDGET, st.fixed_dictionaries({}, optional=OPTIONS)
)


@given(body=BODY)
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
def test_fuzz_valid_bodies(server: str, body: dict[str, Any]) -> None:
    """Valid bodies are compressed (200) or refused with a clear 422 (e.g. a budget that cannot hold the protected
    text); never a server error, and a 200 keeps its promises."""
    r = httpx.post(f"{server}/v1/compress", json=body, timeout=30)
    assert r.status_code in (200, 422), r.text
    data = r.json()
    if r.status_code == 422:
        assert data["error"]["code"] in ("invalid_input", "budget_unsatisfiable") and data["error"]["message"]
        return
    assert data["compressed_tokens"] <= data["original_tokens"]
    if "target_tokens" in body and "text" in body:
        assert data["compressed_tokens"] <= body["target_tokens"]
    if body.get("include_segments") and "text" in body:
        assert "".join(s["text"] for s in data["segments"]) == body["text"]
