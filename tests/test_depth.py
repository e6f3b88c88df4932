"""The nesting-depth limit shared by the library and the service (promptshrink.depth)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import promptshrink
from promptshrink.depth import MAX_DEPTH, JsonDepthScanner, check_depth
from promptshrink.errors import InvalidInputError

TEXT = "The first sentence is here. The second sentence is there. A third one follows it. " * 5
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ab\n'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\k'), inner, max_size=3),
    max_leaves=200,
)


def depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    return 0


def nested(n: int) -> list:
    value: list = []
    for _ in range(n - 1):
        value = [value]
    return value


@settings(max_examples=300, deadline=None)
@given(value=JSON, limit=st.integers(1, 8), cuts=st.lists(st.integers(0, 10_000), max_size=6))
def test_the_scanner_agrees_with_the_parsed_depth(value: object, limit: int, cuts: list[int]) -> None:
    """Fed in arbitrary chunks, the raw-JSON scanner and the object check refuse exactly the values nested deeper
    than the limit; brackets, quotes and backslashes inside strings never count."""
    raw = json.dumps(value).encode()
    points = sorted({min(c, len(raw)) for c in cuts} | {0, len(raw)})
    scanner = JsonDepthScanner(limit)
    ok = all([scanner.feed(raw[a:b]) for a, b in zip(points, points[1:])])
    assert ok == (depth_of(value) <= limit)
    try:
        check_depth(value, limit=limit)
        assert depth_of(value) <= limit
    except InvalidInputError:
        assert depth_of(value) > limit


def test_the_library_refuses_deep_messages_and_passages_with_a_clear_error() -> None:
    deep = nested(MAX_DEPTH + 1)
    messages = [{"role": "user", "content": TEXT, "x": deep}, {"role": "user", "content": "Which sentence?"}]
    with pytest.raises(InvalidInputError, match="more than 64 levels deep"):
        promptshrink.compress_messages(messages, "keep_first", rate=0.5)
    with pytest.raises(InvalidInputError, match="passages nests"):
        promptshrink.compress_passages([{"text": TEXT, "metadata": {"a": deep}}], "Which?", "keep_first", rate=0.5)
    shallow = nested(MAX_DEPTH - 4)  # passages, the passage, metadata: 3 levels above it
    result = promptshrink.compress_passages(
        [{"text": TEXT, "metadata": {"a": shallow}}], "Which?", "keep_first", rate=0.5
    )
    assert result.passages[0]["metadata"] == {"a": shallow}
