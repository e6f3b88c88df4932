"""Compression latency per 1K input tokens of every registered method on tests/data/article.txt.

`python -m benchmarks.latency [--rate 0.5] [--repeats 3] [--cap-s 60] [--methods a b]`. Each method gets a
warm-up call on the first 200 words (model loading), then timed calls on the whole article until ``--repeats``
calls or ``--cap-s`` seconds (at least one call). `--pair A B` instead times A and B in alternation (``--repeats``
rounds, no cap, optionally with ``--question``), so a machine whose load drifts slows both alike; it prints each
round's wall and CPU ratio B/A and each method's median. ``--tokens N`` cuts the input to its first N cl100k tokens
(at a sentence end), e.g. the default's target: ``--pair tfidf auto --tokens 2000 --question "..."``.
``--passages N`` (with ``--pair``) times `compress_passages` instead, on the N multidoc items of the full suite's
cache (results/suite_cache: 10 passages and a question each) nearest ``--tokens`` (default 2,000) tokens, each
round one call per item and method: ``--pair acc_rag auto --passages 6 --rate 0.25 --repeats 3``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import promptshrink

from .speed import Timing, summarize

ARTICLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "article.txt"
RESULTS_CACHE = Path(__file__).resolve().parent / "results" / "suite_cache"


def measure(method: str, text: str, rate: float, repeats: int, cap_s: float) -> list[Timing]:
    tokens = promptshrink.get_tokenizer().count(text)
    promptshrink.compress(" ".join(text.split()[:200]), method, rate=rate)
    timings: list[Timing] = []
    began = time.perf_counter()
    while len(timings) < repeats and (not timings or time.perf_counter() - began < cap_s):
        start = time.perf_counter()
        promptshrink.compress(text, method, rate=rate)
        timings.append(Timing(tokens, time.perf_counter() - start))
    return timings


def first_tokens(text: str, tokens: int) -> str:
    """The longest prefix of ``text`` that ends a sentence and has at most ``tokens`` cl100k tokens."""
    tok = promptshrink.get_tokenizer()
    ends = [m.end() for m in re.finditer(r"[.!?]\]?(?=\s)", text)] or [len(text)]
    fitting = [e for e in ends if tok.count(text[:e]) <= tokens]
    return text[: fitting[-1]] if fitting else text


def multidoc_items(n: int, tokens: int) -> list[tuple[list[str], str]]:
    """(passages, question) of the ``n`` multidoc items of the full suite's cache nearest ``tokens`` tokens."""
    from .suite import load_cached_items

    items = [i for i in load_cached_items(RESULTS_CACHE)[0] if i.task == "multidoc"]
    count = promptshrink.get_tokenizer().count
    items.sort(key=lambda i: abs(count(i.context) - tokens))
    return [(list(i.documents), i.question) for i in items[:n]]


def paired(
    first: str,
    second: str,
    text: str,
    rate: float,
    rounds: int,
    question: str | None = None,
    passages: list[tuple[list[str], str]] | None = None,
) -> None:
    """Alternate the two methods on ``text`` (with ``question``), or on each of ``passages`` (passages, question)
    with `compress_passages`, after a warm-up of each; print wall and CPU seconds and their ratios per round (CPU
    time is what a loaded machine does not distort)."""

    def call(name: str, data: str | list[str], ask: str | None) -> None:
        if isinstance(data, str):
            promptshrink.compress(data, name, rate=rate, question=ask)
        else:
            promptshrink.compress_passages(data, ask, name, rate=rate)

    inputs: list[tuple[str | list[str], str | None]] = list(passages) if passages else [(text, question)]
    for name in (first, second):
        call(name, inputs[0][0] if passages else " ".join(text.split()[:200]), inputs[0][1])
    totals = [[0.0, 0.0], [0.0, 0.0]]  # per method: wall, CPU
    rows: list[list[tuple[float, float]]] = [[], []]
    for k in range(rounds):
        spent = [(0.0, 0.0), (0.0, 0.0)]
        for data, ask in inputs:
            for m, name in enumerate((first, second)):
                wall, cpu = time.perf_counter(), time.process_time()
                call(name, data, ask)
                spent[m] = (spent[m][0] + time.perf_counter() - wall, spent[m][1] + time.process_time() - cpu)
        spent = [(w / len(inputs), c / len(inputs)) for w, c in spent]  # per call
        totals = [[t + x for t, x in zip(total, pair)] for total, pair in zip(totals, spent)]
        for row, pair in zip(rows, spent):
            row.append(pair)
        (wa, ca), (wb, cb) = spent
        print(
            f"round {k + 1}: {first} {wa:.2f} s (CPU {ca:.2f}), {second} {wb:.2f} s (CPU {cb:.2f}), "
            f"{second}/{first} {wb / wa:.1f}x wall, {cb / ca:.1f}x CPU",
            flush=True,
        )
    (wa, ca), (wb, cb) = totals
    print(
        f"total: {first} {wa:.1f} s (CPU {ca:.1f}), {second} {wb:.1f} s (CPU {cb:.1f}), {second}/{first} "
        f"{wb / wa:.1f}x wall, {cb / ca:.1f}x CPU"
    )
    for name, row in zip((first, second), rows):
        walls, cpus = sorted(w for w, _ in row), sorted(c for _, c in row)
        print(f"{name}: p50 {1000 * walls[len(walls) // 2]:.0f} ms wall, {1000 * cpus[len(cpus) // 2]:.0f} ms CPU")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cap-s", type=float, default=60.0, help="stop repeating a method after this many seconds")
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    parser.add_argument("--file", type=Path, default=ARTICLE)
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"), help="time A and B in alternation instead")
    parser.add_argument("--question", help="with --pair: compress with this question")
    parser.add_argument("--tokens", type=int, help="cut the input to about this many cl100k tokens")
    parser.add_argument("--passages", type=int, help="with --pair: time compress_passages on N multidoc items")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    text = args.file.read_text()
    if args.tokens and not args.passages:
        text = first_tokens(text, args.tokens)
    if args.pair and args.passages:
        items = multidoc_items(args.passages, args.tokens or 2000)
        sizes = [promptshrink.get_tokenizer().count("\n\n".join(p)) for p, _ in items]
        print(f"{len(items)} multidoc items of {min(sizes)}-{max(sizes)} tokens (cl100k_base), rate={args.rate}")
        paired(*args.pair, "", args.rate, args.repeats, passages=items)
        return 0
    if args.pair:
        print(f"{args.file.name}: {promptshrink.get_tokenizer().count(text)} tokens (cl100k_base), rate={args.rate}")
        paired(*args.pair, text, args.rate, args.repeats, args.question)
        return 0
    names = args.methods or [m["name"] for m in promptshrink.describe_methods()]
    print(f"{args.file.name}: {promptshrink.get_tokenizer().count(text)} tokens (cl100k_base), rate={args.rate}")
    print(f"{'method':<20} {'calls':>5} {'ms/1K p50':>10} {'ms/1K p95':>10} {'tokens/s':>10}")
    for name in names:
        try:
            stats = summarize(measure(name, text, args.rate, args.repeats, args.cap_s))
        except Exception as exc:  # report and go on: one broken method must not hide the others
            print(f"{name:<20} failed: {type(exc).__name__}: {exc}")
            continue
        print(
            f"{name:<20} {stats['calls']:>5} {stats['ms_per_1k_p50']:>10.0f} {stats['ms_per_1k_p95']:>10.0f} "
            f"{stats['tokens_per_s']:>10.0f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
