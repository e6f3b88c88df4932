"""Reader generation speed: `python -m benchmarks.reader_speed` (results/reader_speed.{json,md,png}).

The reader of `benchmarks.quality` (`large-lm`, greedy, chat template) on a fixed mix of quick-suite prompts:
every task's full context and its tfidf compressions at rates 0.5, 0.25 and 0.1. Two ways of generating the
same prompts, at each torch thread count asked: one prompt per `generate` call with transformers'
``stop_strings`` (the reader before batching), and `CachedChatReader.generate` (left-padded batches sorted by
length, per-row stop). Reports generations/s, prompt tokens/s, the load average around each run and how many
answers the two ways agree on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from .quality import SUITES
from .readers import CachedChatReader
from .run import RESULTS, environment, load_items
from .systems import BudgetSpec, PromptshrinkMethod

RATES = (0.5, 0.25, 0.1)


def prompts(suite: str, per_task: int, seed: int) -> list[tuple[str, str, str]]:
    """(task, context, question): ``per_task`` items of each task, full and tfidf-compressed at RATES."""
    items, _ = load_items(SUITES[suite], seed)
    picked = [i for task in sorted({i.task for i in items}) for i in [x for x in items if x.task == task][:per_task]]
    tfidf = PromptshrinkMethod("tfidf")
    out = []
    for item in picked:
        out.append((item.task, item.context, item.question))
        for rate in RATES:
            out.append((item.task, tfidf.compress(item, BudgetSpec(f"rate={rate}", rate=rate)).text, item.question))
    return out


def one_by_one(reader: CachedChatReader, ids: list[int], cap: int) -> str:
    """The reader before batching: one prompt per `generate` call, stopping with transformers' stop strings."""
    import torch

    model, tokenizer = reader.load()
    with torch.inference_mode():
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=cap,
            do_sample=False,
            stop_strings=["\n"],
            tokenizer=tokenizer,
            top_p=None,
            top_k=None,
            temperature=None,
        )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True)


def measure(requests: list[tuple[str, str, str]], mode: str, batch_size: int) -> dict[str, Any]:
    """Generate every request one way, from an empty in-memory cache; wall time, prompt tokens, the answers."""
    reader = CachedChatReader(Path(os.devnull), batch_size=batch_size)
    _, tokenizer = reader.load()
    prepared = []
    for task, context, question in requests:
        messages, cap = reader.messages(task, context, question)
        prepared.append((reader.encode(tokenizer, messages), cap))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    if mode == "one-by-one":
        answers = [reader.extract(one_by_one(reader, ids, cap)) for ids, cap in prepared]
    else:
        answers = reader.answer_many(requests)
    seconds = time.perf_counter() - start
    return {
        "mode": mode,
        "generations": len(prepared),
        "seconds": round(seconds, 1),
        "generations_per_s": len(prepared) / seconds,
        "prompt_tokens_per_s": sum(len(ids) for ids, _ in prepared) / seconds,
        "load_avg_before": load_before,
        "load_avg_after": os.getloadavg()[0],
        "answers": answers,
    }


def plot(runs: list[dict[str, Any]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    labels = [f"{r['mode']}\n{r['threads']} thread(s)" for r in runs]
    ax.bar(
        labels, [r["generations_per_s"] for r in runs], color=["#999" if "one" in r["mode"] else "#36c" for r in runs]
    )
    ax.set_ylabel("generations / s (large-lm, CPU)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=sorted(SUITES), default="quick")
    parser.add_argument("--per-task", type=int, default=1, help="items per task (each gives 4 prompts)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    import torch

    requests = prompts(args.suite, args.per_task, args.seed)
    runs = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for mode in ("one-by-one", "batched"):
            run = {"threads": threads, **measure(requests, mode, args.batch_size)}
            runs.append(run)
            print(f"{threads} thread(s) {mode}: {run['generations_per_s']:.3f} gen/s", file=sys.stderr, flush=True)
    for run in runs:
        base = next(r for r in runs if r["threads"] == run["threads"] and r["mode"] == "one-by-one")
        run["same_answers_as_one_by_one"] = sum(a == b for a, b in zip(run["answers"], base["answers"]))
    lines = [
        "| threads | mode | generations | s | generations/s | prompt tokens/s | load avg before/after | same answers |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r['threads']} | {r['mode']} | {r['generations']} | {r['seconds']} | {r['generations_per_s']:.3f} | "
            f"{r['prompt_tokens_per_s']:.0f} | {r['load_avg_before']:.2f} / {r['load_avg_after']:.2f} | "
            f"{r['same_answers_as_one_by_one']}/{r['generations']} |"
        )
    table = "\n".join(lines)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "environment": environment("python -m benchmarks.reader_speed " + " ".join(argv or sys.argv[1:])),
        "cpu_count": os.cpu_count(),
        "batch_size": args.batch_size,
        "runs": runs,
    }
    result["plot"] = str(plot(runs, args.out / "reader_speed.png"))
    (args.out / "reader_speed.json").write_text(json.dumps(result, indent=1))
    (args.out / "reader_speed.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
