"""Structure safety: JSON stays valid (only long string values shrink), markdown tables and chat roles survive."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import promptshrink as ps
from promptshrink.json_splice import json_regions, string_values
from promptshrink.segmentation import table_spans

SENTENCES = st.sampled_from(
    [
        "The committee met on Tuesday to review the annual budget.",
        "Members discussed the spring maintenance of the library.",
        "A short presentation covered parking near the town hall.",
        'She said "hello" and left\\nquickly.',
        "Prices rose 4.5% in 2023 across 12 cities.",
        "Das Wetter in München war schön.",
    ]
)
LONG = st.lists(SENTENCES, min_size=1, max_size=8).map(" ".join)
SCALARS = st.one_of(st.integers(-(10**6), 10**6), st.booleans(), st.none(), st.floats(-1e3, 1e3, allow_nan=False))
KEYS = st.sampled_from(["title", "body", "note", "id", "a b", 'quo"te', "ünï"])
DOCS = st.recursive(
    st.one_of(SCALARS, LONG, st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=12,
).filter(lambda d: isinstance(d, (dict, list)))
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def skeleton(value):
    """The document with every string replaced by a marker: what compression must never change."""
    if isinstance(value, dict):
        return {k: skeleton(v) for k, v in value.items()}
    if isinstance(value, list):
        return [skeleton(v) for v in value]
    return "<str>" if isinstance(value, str) else value


@FAST
@given(
    doc=DOCS,
    indent=st.sampled_from([None, 2]),
    rate=st.floats(0.2, 0.9),
    method=st.sampled_from(["tfidf", "keep_first"]),
)
def test_json_round_trips_and_only_long_strings_change(doc, indent, rate, method):
    text = json.dumps(doc, indent=indent, ensure_ascii=False)
    try:
        r = ps.compress(text, method, rate=rate)
    except ps.BudgetError as exc:
        assert "JSON structure" in str(exc) or "protected content" in str(exc)
        return
    out = json.loads(r.text)
    assert skeleton(out) == skeleton(doc)
    assert r.compressed_tokens == ps.get_tokenizer().count(r.text)
    assert r.compressed_tokens <= max(1, int(rate * r.original_tokens + 1e-9)) or r.text == text


def test_json_target_tokens_and_string_shrinks():
    doc = {
        "id": 7,
        "ok": True,
        "tags": ["a", "b"],
        "body": " ".join(["The committee met on Tuesday to review it."] * 12),
    }
    text = json.dumps(doc)
    r = ps.compress(text, "tfidf", target_tokens=60)
    out = json.loads(r.text)
    assert r.compressed_tokens <= 60
    assert {k: out[k] for k in ("id", "ok", "tags")} == {"id": 7, "ok": True, "tags": ["a", "b"]}
    assert len(out["body"]) < len(doc["body"])
    assert r.details["structure"] == "json"
    assert any(s.rewritten is not None for s in r.segments)


def test_json_whose_structure_exceeds_the_budget_is_a_clear_error():
    text = json.dumps({f"key{i}": i for i in range(40)} | {"body": "word " * 50})
    with pytest.raises(ps.BudgetError, match="JSON structure"):
        ps.compress(text, "tfidf", target_tokens=20)


def test_string_values_skip_keys_and_decode_escapes():
    text = '{"k": "v\\"1", "list": ["x", {"inner": "y"}], "n": 3}'
    values = string_values(text, (0, len(text)))
    assert [v.value for v in values] == ['v"1', "x", "y"]
    assert all(text[v.start] == '"' and text[v.end - 1] == '"' for v in values)


def test_fenced_json_in_prose_stays_valid():
    block = json.dumps({"n": 1, "text": " ".join(["Members discussed the library schedule today."] * 10)}, indent=2)
    prose = " ".join(["The town council published its notes this week."] * 12)
    text = f"{prose}\n\n```json\n{block}\n```\n\n{prose}"
    assert len(json_regions(text)) == 1
    r = ps.compress(text, "tfidf", rate=0.5)
    body = r.text.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(body)["n"] == 1
    assert r.compressed_tokens <= r.original_tokens // 2
    assert r.details["structure"] == "fenced-json"


TABLE = (
    "| city | population | note |\n|:-----|-----------:|------|\n"
    "| Paris | 2,102,650 | capital of France |\n| Lyon | 522,250 | on the Rhone |"
)


@pytest.mark.parametrize("method", ["keep_first", "keep_last", "tfidf", "random"])
@pytest.mark.parametrize("unit", ["word", "sentence"])
def test_markdown_tables_are_never_broken(method, unit):
    before = " ".join(["Some introduction about French cities and their sizes."] * 8)
    after = " ".join(["More closing remarks about the data above."] * 8)
    text = f"{before}\n\n{TABLE}\n\n{after}"
    assert table_spans(text) == [(text.index(TABLE), text.index(TABLE) + len(TABLE))]
    r = ps.compress(text, method, rate=0.4, unit=unit)
    assert TABLE in r.text


def test_text_without_a_separator_row_is_not_a_table():
    assert table_spans("a | b\nc | d\n") == []


MESSAGES = [
    {"role": "system", "content": " ".join(["You are a helpful assistant for the town council."] * 6)},
    {"role": "user", "content": " ".join(["The committee met on Tuesday to review the annual budget."] * 8)},
    {"role": "assistant", "content": " ".join(["Members discussed the spring maintenance of the library."] * 8)},
    {"role": "tool", "content": json.dumps({"status": 200, "body": " ".join(["Parking is free after six."] * 10)})},
    {"role": "user", "content": "When is parking free?"},
]


@pytest.mark.parametrize("budget", [{"rate": 0.5}, {"target_tokens": 150}])
def test_messages_keep_roles_order_system_and_query(budget):
    r = ps.compress_messages(MESSAGES, "tfidf", **budget)
    assert [m["role"] for m in r.messages] == [m["role"] for m in MESSAGES]
    assert r.messages[0] == MESSAGES[0] and r.messages[-1] == MESSAGES[-1]
    assert all(len(r.messages[i]["content"]) < len(MESSAGES[i]["content"]) for i in (1, 2, 3))
    assert json.loads(r.messages[3]["content"])["status"] == 200
    assert r.per_message[0] is None and r.per_message[-1] is None
    assert r.compressed_tokens == sum(ps.get_tokenizer().count_many([m["content"] for m in r.messages]))
    if "target_tokens" in budget:
        assert r.compressed_tokens <= budget["target_tokens"]


def test_messages_can_include_the_system_prompt():
    r = ps.compress_messages(MESSAGES, "tfidf", rate=0.5, roles=("system", "user", "assistant", "tool"))
    assert len(r.messages[0]["content"]) < len(MESSAGES[0]["content"])


def test_bad_messages_are_clear_errors():
    with pytest.raises(ps.InvalidInputError, match="non-empty list"):
        ps.compress_messages([], "tfidf")
    with pytest.raises(ps.InvalidInputError, match="role"):
        ps.compress_messages([{"content": "hi"}], "tfidf")
