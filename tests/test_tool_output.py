"""Tool outputs and agent histories: structure-aware shrinking and `compress_messages(format=...)` in the three
API shapes (OpenAI chat, Anthropic Messages, OpenAI Responses)."""

from __future__ import annotations

import copy
import json

import pytest

import promptshrink as ps
from promptshrink.formats import compress_conversation
from promptshrink.tool_output import kind_of, shrink_tool_output
from tests.support.texts import LOG, ROWS, TOOL_JSON, TOOLS_ANTHROPIC

TOK = ps.get_tokenizer()
CODE = "\n".join(
    f"def handler_{i}(event, context):\n    data = event['body']\n    return data * {i}\n" for i in range(30)
)
PROSE = " ".join(f"Sentence {i} says something about the harbour and its boats." for i in range(40))


def keep_first(text: str, limit: int) -> str:
    return ps.compress(text, "keep_first", target_tokens=limit).text


@pytest.mark.parametrize(("text", "kind"), [(TOOL_JSON, "json"), (LOG, "log"), (CODE, "code"), (PROSE, "text")])
def test_shape_is_recognised(text: str, kind: str) -> None:
    assert kind_of(text) == kind


@pytest.mark.parametrize("limit", [100, 150, 400])
def test_json_stays_valid_and_notes_what_was_dropped(limit: int) -> None:
    out, kind = shrink_tool_output(TOOL_JSON, limit, TOK, "What is the temperature in city 42?", keep_first)
    data = json.loads(out)
    assert kind == "json" and data["status"] == "ok" and set(data) == {"status", "results", "summary"}
    assert TOK.count(out) < TOK.count(TOOL_JSON) / 3
    note = data["results"][-1]
    assert isinstance(note, str) and "items dropped" in note and "keys city, id, note, temp_c" in note
    kept = data["results"][:-1]
    assert all(item in ROWS for item in kept) and [r["id"] for r in kept] == sorted(r["id"] for r in kept)
    assert any(r["id"] == 42 for r in kept), "the item the question names is kept"
    assert len(data["summary"]) < len(json.loads(TOOL_JSON)["summary"])


def test_json_floor_is_its_keys_and_notes() -> None:
    out, _ = shrink_tool_output(TOOL_JSON, 10, TOK, None, keep_first)
    data = json.loads(out)
    assert data["status"] == "ok" and data["results"] == [data["results"][0]] and "kept items none" in out
    assert TOK.count(out) < 60


def test_output_within_limit_is_unchanged() -> None:
    assert shrink_tool_output(TOOL_JSON, 10**6, TOK, None, keep_first) == (TOOL_JSON, "json")


def test_log_loses_repeated_lines_first_and_keeps_errors() -> None:
    out, _ = shrink_tool_output(LOG, 200, TOK, None, keep_first)
    lines = out.splitlines()
    assert lines[0].endswith("[x80]") and any("ERROR database timeout" in line for line in lines)
    assert len(lines) == 3  # one line per template, nothing else needed
    tight, _ = shrink_tool_output(LOG + "\n" + CODE.replace("def ", "step "), 30, TOK, None, keep_first)
    assert "ERROR database timeout" in tight and "lines dropped]" in tight


def test_code_keeps_signatures() -> None:
    out, _ = shrink_tool_output(CODE, 100, TOK, None, keep_first)
    assert all(f"def handler_{i}(event, context):" in out for i in range(30))
    assert "return data" not in out and "    ..." in out


def test_prose_goes_to_the_method() -> None:
    out, kind = shrink_tool_output(PROSE, 50, TOK, None, keep_first)
    assert kind == "text" and out.startswith("Sentence 0 says") and 0 < TOK.count(out) <= 50


def test_anthropic_only_the_tool_result_changes() -> None:
    r = ps.compress_messages(TOOLS_ANTHROPIC, "keep_first", rate=0.3, format="anthropic")
    assert r.compressed_tokens < r.original_tokens / 2
    out = copy.deepcopy(r.messages)
    result = out[2]["content"][0]
    assert json.loads(result.pop("content"))["status"] == "ok"
    expected = copy.deepcopy(TOOLS_ANTHROPIC)
    del expected[2]["content"][0]["content"]
    assert out == expected and r.per_message[2] is not None and r.per_message[2].details["shape"] == "json"


def test_anthropic_tool_result_blocks_and_strings() -> None:
    blocks = copy.deepcopy(TOOLS_ANTHROPIC)
    blocks[2]["content"][0]["content"] = [{"type": "text", "text": LOG}]
    r = ps.compress_messages(blocks, "keep_first", rate=0.3, format="anthropic")
    assert r.messages[2]["content"][0]["content"][0]["text"].splitlines()[0].endswith("[x80]")


def test_responses_function_call_output_and_untouched_items() -> None:
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Why did the job fail?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": PROSE}]},
        {"type": "function_call", "call_id": "c1", "name": "logs", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": LOG},
    ]
    r = ps.compress_messages(items, "keep_first", rate=0.3, format="responses")
    assert r.messages[:3] == items[:3] and "ERROR database timeout" in r.messages[3]["output"]
    assert len(r.messages[3]["output"]) < len(LOG) / 5
    assert ps.compress_messages("just a string input " * 50, "keep_first", format="responses").messages == (
        "just a string input " * 50
    )


def test_openai_tool_messages_under_the_threshold_are_left_alone() -> None:
    small = json.dumps(ROWS[:3])
    assert len(small) < 500
    messages = [{"role": "user", "content": "city 1?"}, {"role": "tool", "tool_call_id": "t", "content": small}]
    assert ps.compress_messages(messages, "keep_first", rate=0.2, format="openai").messages == messages
    shrunk = compress_conversation(messages, "keep_first", rate=0.2, tool_min_chars=100)
    assert json.loads(shrunk.messages[1]["content"]) != ROWS[:3]


def test_older_turns_are_compressed_harder() -> None:
    history = []
    for turn in range(10):
        history += [{"role": "user", "content": f"Question {turn}?"}, {"role": "assistant", "content": PROSE}]
    history.append({"role": "user", "content": "And now?"})
    r = ps.compress_messages(history, "keep_first", rate=0.8, format="openai")
    kept = [TOK.count(r.messages[i]["content"]) for i in range(1, len(history), 2)]
    assert kept[0] < kept[-3] < kept[-1] and kept == sorted(kept)  # oldest first: factors 0.5, 0.75, 1.0
    flat = ps.compress_messages(history, "keep_first", rate=0.8, format="openai", schedule=())
    assert len({TOK.count(flat.messages[i]["content"]) for i in range(1, len(history), 2)}) == 1


def test_ranges_pick_the_rate_by_size_and_skip_the_rest() -> None:
    messages = [{"role": "assistant", "content": PROSE}, {"role": "user", "content": "ok?"}]
    n = TOK.count(PROSE)
    untouched = compress_conversation(messages, "keep_first", ranges=[(n + 1, 10**6, 0.1)])
    assert untouched.messages == messages
    small = compress_conversation(messages, "keep_first", ranges=[(0, n + 1, 0.2)], schedule=())
    assert small.compressed_tokens <= int(n * 0.2) + 3


def test_parts_and_roles_select_what_is_compressed() -> None:
    conv = [{"role": "user", "content": [{"type": "text", "text": PROSE}]}, *TOOLS_ANTHROPIC]
    only_tools = ps.compress_messages(conv, "keep_first", rate=0.3, format="anthropic", parts=["tool_result"])
    assert only_tools.messages[0] == conv[0] and only_tools.messages[3] != conv[3]
    no_tools = ps.compress_messages(conv, "keep_first", rate=0.3, format="anthropic", roles=("user",))
    assert no_tools.messages[0] != conv[0] and no_tools.messages[3] == conv[3]


@pytest.mark.parametrize(
    ("messages", "format", "match"),
    [
        ([{"role": "user", "content": "x"}], "gemini", "format must be one of"),
        ([], "anthropic", "non-empty list"),
        (["hello"], "responses", "must be an object"),
        ([{"content": "x"}], "anthropic", "role"),
        ([{"role": "user", "content": 5}], "anthropic", "content"),
    ],
)
def test_bad_conversations_are_clear_errors(messages: object, format: str, match: str) -> None:
    with pytest.raises(ps.InvalidInputError, match=match):
        ps.compress_messages(messages, "keep_first", format=format)  # type: ignore[arg-type]


def test_split_question_compresses_the_context_of_the_latest_user_turn() -> None:
    messages = [{"role": "user", "content": PROSE + "\n\nQuestion: which harbour is it?"}]
    kept = ps.compress_messages(messages, "keep_first", rate=0.3, format="anthropic")
    assert kept.messages == messages
    split = ps.compress_messages(messages, "keep_first", rate=0.3, format="anthropic", split_question=True)
    text = split.messages[0]["content"]
    assert text.endswith("\n\nQuestion: which harbour is it?") and len(text) < len(PROSE) / 2
