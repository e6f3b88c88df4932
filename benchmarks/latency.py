"""Compression latency per 1K input tokens of every registered method on tests/data/article.txt.

`python -m benchmarks.latency [--rate 0.5] [--repeats 3] [--cap-s 60] [--methods a b]`. Each method gets a
warm-up call on the first 200 words (model loading), then timed calls on the whole article until ``--repeats``
calls or ``--cap-s`` seconds (at least one call).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import promptshrink

from .speed import Timing, summarize

ARTICLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "article.txt"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cap-s", type=float, default=60.0, help="stop repeating a method after this many seconds")
    parser.add_argument("--methods", nargs="*", help="default: every registered method")
    parser.add_argument("--file", type=Path, default=ARTICLE)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    text = args.file.read_text()
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
