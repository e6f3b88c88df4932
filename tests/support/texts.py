"""Sample texts shared by several test modules."""

from __future__ import annotations

import json

# A report of 40 similar paragraphs (about 1,400 tokens): long enough to compress, model-free methods are fast on it.
LONG_TEXT = " ".join(
    f"Paragraph {i}: the quarterly report for region {i % 7} shows revenue of {100 + i} million dollars, "
    f"driven by strong demand, while costs rose slightly because of logistics and hiring."
    for i in range(40)
)

# An answer sentence in the middle of filler: question-aware methods must keep it.
FILLER = [
    "The committee met on Tuesday to review the annual budget and several routine items.",
    "Members discussed the schedule for the spring maintenance of the public library.",
    "A short presentation covered the new parking arrangements near the town hall.",
]
ANSWER = "The lighthouse keeper's cat is named Biscuit and it sleeps in the lantern room."
MIDDLE = " ".join(FILLER * 3 + [ANSWER] + FILLER * 3)

# A tool's JSON result and a log, as agents send them.
ROWS = [{"id": i, "city": f"city {i}", "temp_c": 10 + i % 15, "note": "clear skies, light wind"} for i in range(60)]
TOOL_JSON = json.dumps({"status": "ok", "results": ROWS, "summary": " ".join(["The forecast is stable."] * 40)})
LOG = "\n".join(
    [f"2026-01-01 10:00:{i % 60:02d} INFO request {i} served in {i * 3} ms" for i in range(80)]
    + ["2026-01-01 10:01:00 ERROR database timeout after 30 s", "2026-01-01 10:01:01 INFO retrying"]
)

# An Anthropic Messages conversation: a tool call, its JSON result (with cache_control), an image, an unknown key.
TOOLS_ANTHROPIC = [
    {"role": "user", "content": [{"type": "text", "text": "What is the temperature in city 42?"}]},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "I should call the tool.", "signature": "sig=="},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "city 42"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": TOOL_JSON,
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        ],
        "x-unknown": 1,
    },
]
