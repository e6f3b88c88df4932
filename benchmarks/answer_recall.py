"""Reader-free check of extractive selectors: does the kept text still hold the answer?

`python -m benchmarks.answer_recall [--items 40] [--methods tfidf rerank] [--rates 0.5 0.25 0.1]`. For each item
and rate, every system compresses the context with the question (multidoc items through `compress_passages`);
with a question the score is 1 when a gold answer string survives (`metrics.answer_retained`), for the summary
task (no question) it is the share of the XSum reference summary's content words found in the kept text. Each
system is compared with the first one (the baseline, `tfidf` by default) by a paired bootstrap over items (95%
interval of the mean difference). Data: DisflQA paragraphs (qa), 10 of them with one gold (multidoc, ~2K tokens),
2,000-word State of the Union haystacks with a needle (needle), XSum articles (summary). JSON and a Markdown table
go to ``results/answer_recall.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from .data import LOADERS, Item
from .metrics import answer_retained, bootstrap_ci, normalize
from .run import RESULTS, environment
from .systems import BudgetSpec, parse_system

TASKS = {"qa": {}, "multidoc": {"passages": 10}, "needle": {"words": 2000}, "summary": {"max_words": 600}}
_STOP = {"a", "an", "the", "of", "in", "on", "at", "to", "for", "and", "or", "but", "is", "are", "was", "were", "by"}


def recall(item: Item, text: str) -> float:
    """1/0 answer survival with a question; reference content-word recall for the summary task."""
    if item.task != "summary":
        return float(answer_retained(text, item.answers))
    words = {w for w in normalize(item.reference).split() if w not in _STOP}
    kept = set(normalize(text).split())
    return len(words & kept) / len(words) if words else 0.0


def run(methods: list[str], items: list[Item], rates: list[float]) -> list[dict[str, Any]]:
    records = []
    for spec in methods:
        system = parse_system(spec)
        began = time.perf_counter()
        for rate in rates:
            for item in items:
                out = system.compress(item, BudgetSpec(f"rate={rate}", rate=rate))
                records.append(
                    {
                        "system": spec,
                        "rate": rate,
                        "item": item.id,
                        "task": item.task,
                        "ratio": out.compressed_tokens / out.original_tokens,
                        "seconds": out.seconds,
                        "score": recall(item, out.text),
                    }
                )
        print(f"{spec}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
    return records


def summarise(records: list[dict[str, Any]], baseline: str, resamples: int = 1000) -> list[dict[str, Any]]:
    """Per task, rate and system: mean score and achieved ratio, and the paired difference from ``baseline``."""
    rows = []
    keys = sorted({(r["task"], r["rate"], r["system"]) for r in records}, key=lambda k: (k[0], -k[1], k[2]))
    by = {(r["task"], r["rate"], r["system"], r["item"]): r for r in records}
    for task, rate, system in keys:
        ids = sorted({r["item"] for r in records if (r["task"], r["rate"], r["system"]) == (task, rate, system)})
        mine = [by[task, rate, system, i]["score"] for i in ids]
        base = [by[task, rate, baseline, i]["score"] for i in ids]
        diff = [a - b for a, b in zip(mine, base)]
        row = {
            "task": task,
            "rate": rate,
            "system": system,
            "items": len(ids),
            "score": sum(mine) / len(ids),
            "ratio": sum(by[task, rate, system, i]["ratio"] for i in ids) / len(ids),
            "ms": 1000 * sum(by[task, rate, system, i]["seconds"] for i in ids) / len(ids),
        }
        if system != baseline:
            row["diff"] = sum(diff) / len(diff)
            row["ci"] = bootstrap_ci(lambda picks, d=diff: sum(d[k] for k in picks) / len(picks), len(diff), resamples)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]], baseline: str) -> str:
    lines = [
        f"| task | rate | system | items | score | achieved ratio | ms/call | vs {baseline} [95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        versus = ""
        if "diff" in r:
            ci = f" [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]" if r["ci"] else ""
            versus = f"{r['diff']:+.3f}{ci}"
        lines.append(
            f"| {r['task']} | {r['rate']} | {r['system']} | {r['items']} | {r['score']:.3f} | {r['ratio']:.3f} | "
            f"{r['ms']:.0f} | {versus} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--methods", nargs="+", default=["tfidf", "rerank"], help="the first is the baseline")
    parser.add_argument("--items", type=int, default=40, help="items per task")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--rates", nargs="+", type=float, default=[0.5, 0.25, 0.1])
    parser.add_argument("--seed", type=int, default=1, help="1: not the reader suites' seed-0 items")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    items = [item for task in args.tasks for item in LOADERS[task](args.items, seed=args.seed, **TASKS[task])]
    records = run(args.methods, items, args.rates)
    rows = summarise(records, args.methods[0])
    text = table(rows, args.methods[0])
    command = "python -m benchmarks.answer_recall " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"environment": environment(command), "rows": rows, "records": records}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "answer_recall.json").write_text(json.dumps(result, indent=1))
    (args.out / "answer_recall.md").write_text(f"`{command}`\n\n{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
