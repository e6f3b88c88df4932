"""Reader-based quality at equal achieved ratio: `python -m benchmarks.quality --suite quick`.

The bundled instruct LM (`large-lm`, greedy, chat template) answers every item from the full context and from
each system's compressed context at several rates. Scores per task: token F1 against the gold answer (qa,
multidoc, needle; EM and agreement with the full-context answer alongside), final-answer accuracy after
compressed demonstrations (gsm; the reader answers with the number), and unigram F1 (ROUGE-1) of the summary against
the full-context summary (summary: no question). Because systems miss their budgets in both directions,
systems are compared at equal **achieved** ratio: each system's (mean achieved ratio, mean score) points per
rate, plus the full context at ratio 1, are interpolated at 0.5, 0.25 and 0.1, with 95% bootstrap intervals
over items and paired bootstrap differences for the comparisons. Each system's prompts are read in batches
(`readers.CachedChatReader`), and reader outputs are cached on disk by prompt hash
(`results/reader_cache.jsonl`), so a re-run only pays for prompts it has not seen.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

from .data import Item
from .metrics import bootstrap_ci, exact_match, f1, final_number, interpolate, normalize
from .peers import peer_systems
from .readers import CachedChatReader
from .run import RESULTS, Suite, environment, load_items
from .systems import BudgetSpec, System, count, promptshrink_systems

AT_RATIOS = (0.5, 0.25, 0.1)
QUICK_METHODS = ["tfidf", "acc_rag", "selective_context", "distilled", "auto"]
BASELINES = ("tfidf", "peer:llmlingua", "peer:longllmlingua")
MIN_ITEMS = 5  # fewer shared items than this: no win/loss verdict, whatever the interval says
SUITES = {
    "micro": Suite({"qa": 1, "summary": 1}, budgets=(BudgetSpec("rate=0.5", rate=0.5),)),
    "quick": Suite(
        {"qa": 3, "multidoc": 3, "needle": 3, "gsm": 3, "summary": 3},  # < 15 min; --items 5 for verdicts
        passages=3,
        needle_words=300,
        shots=2,
        summary_max_words=300,
        budgets=tuple(BudgetSpec(f"rate={r}", rate=r) for r in (0.5, 0.25, 0.1)),
    ),
    "full": Suite(
        {"qa": 100, "multidoc": 100, "needle": 100, "gsm": 100, "summary": 100},
        passages=10,
        needle_words=3000,
        shots=4,
        budgets=tuple(BudgetSpec(f"rate={r}", rate=r) for r in (0.7, 0.5, 0.33, 0.2, 0.1)),
    ),
}


def score(item: Item, prediction: str, full_prediction: str) -> dict[str, float]:
    """The task's reader score (``score``) and the secondary metrics for one prediction."""
    if item.task == "gsm":
        return {"score": float(final_number(prediction) == str(item.meta["answer"]))}
    if item.task == "summary":
        return {"score": f1(prediction, [full_prediction])}
    return {
        "score": f1(prediction, item.answers),
        "em": exact_match(prediction, item.answers),
        "agree": float(normalize(prediction) == normalize(full_prediction)),
    }


def evaluate(
    systems: Sequence[System], items: list[Item], suite: Suite, reader: CachedChatReader
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, str]]:
    """Full-context answers, then per system: compress every rate x item, answer them all in batches, score."""
    full: dict[str, dict[str, Any]] = {}
    for item, prediction in zip(items, reader.answer_many([(i.task, i.context, i.question) for i in items])):
        full[item.id] = {"prediction": prediction, **score(item, prediction, prediction)}
    records, skipped = [], {}
    for system in systems:
        reason = system.unavailable()
        if reason:
            skipped[system.name] = reason
            continue
        began = time.perf_counter()
        done = []
        for budget in suite.budgets:
            for item in items:
                try:
                    done.append((item, budget, system.compress(item, budget)))
                except Exception as exc:  # one failing system must not sink the run; it is reported
                    skipped.setdefault(system.name, f"{item.id} {budget.label}: {type(exc).__name__}: {exc}")
        compressed = time.perf_counter()
        asked = [(item.task, out.text, item.question) for item, _, out in done if out.text.strip()]
        answers = iter(reader.answer_many(asked))
        for item, budget, out in done:
            prediction = next(answers) if out.text.strip() else ""
            records.append(
                {
                    "system": system.name,
                    "budget": budget.label,
                    "item": item.id,
                    "task": item.task,
                    "ratio": out.compressed_tokens / out.original_tokens,
                    "seconds": out.seconds,
                    "original_tokens": out.original_tokens,
                    "prediction": prediction,
                    **score(item, prediction, full[item.id]["prediction"]),
                }
            )
        print(
            f"{system.name}: compress {compressed - began:.0f}s, read {time.perf_counter() - compressed:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    return records, full, skipped


def curve(
    records: list[dict[str, Any]], full: dict[str, dict[str, Any]], ids: Sequence[str]
) -> list[tuple[float, float]]:
    """(mean achieved ratio, mean score) per budget over ``ids`` (repeats allowed), plus the full context at 1."""
    by_budget: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        by_budget[r["budget"]][r["item"]] = r
    points = [(1.0, sum(full[i]["score"] for i in ids) / len(ids))]
    for recs in by_budget.values():
        if all(i in recs for i in ids):
            points.append(
                (sum(recs[i]["ratio"] for i in ids) / len(ids), sum(recs[i]["score"] for i in ids) / len(ids))
            )
    return points


def at_ratio(records: list[dict[str, Any]], full: dict[str, dict[str, Any]], ids: Sequence[str], at: float) -> Any:
    return interpolate(curve(records, full, ids), at)


def summarise(
    records: list[dict[str, Any]], full: dict[str, dict[str, Any]], resamples: int = 1000
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per (system, task): score at each AT_RATIOS with a bootstrap CI; paired comparisons of the best
    promptshrink method against each baseline (difference and its CI; a win or loss only outside the CI)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        groups[(r["system"], r["task"])].append(r)
    rows = []
    for (system, task), recs in sorted(groups.items()):
        ids = sorted({r["item"] for r in recs})
        row: dict[str, Any] = {"system": system, "task": task, "items": len(ids), "points": curve(recs, full, ids)}
        for at in AT_RATIOS:
            value = at_ratio(recs, full, ids, at)
            ci = bootstrap_ci(partial(_resampled, at_ratio, (recs,), full, ids, at), len(ids), resamples)
            row[f"at_{at}"] = None if value is None else {"score": value, "ci": ci}
        rows.append(row)
    comparisons = []
    for task in sorted({t for _, t in groups}):
        ours = [s for s, t in groups if t == task and not s.startswith("peer:") and s not in ("tfidf",)]
        for at in AT_RATIOS:
            scored = [
                (row[f"at_{at}"]["score"], row["system"])
                for row in rows
                if row["task"] == task and row["system"] in ours and row[f"at_{at}"] is not None
            ]
            if not scored:
                continue
            best = max(scored)[1]
            for base in BASELINES:
                if (base, task) not in groups:
                    continue
                a, b = groups[(best, task)], groups[(base, task)]
                ids = sorted({r["item"] for r in a} & {r["item"] for r in b})
                diff = _diff(a, b, full, ids, at)
                if diff is None:
                    continue
                ci = bootstrap_ci(partial(_resampled, _diff, (a, b), full, ids, at), len(ids), resamples)
                if len(ids) < MIN_ITEMS:
                    verdict = f"n={len(ids)}: too few items"
                elif ci is None or ci[0] <= 0 <= ci[1]:
                    verdict = "tie"
                else:
                    verdict = "win" if ci[0] > 0 else "loss"
                comparisons.append(
                    {
                        "task": task,
                        "at": at,
                        "best": best,
                        "baseline": base,
                        "items": len(ids),
                        "diff": diff,
                        "ci": ci,
                        "verdict": verdict,
                    }
                )
    return rows, comparisons


def _resampled(fn: Any, groups: tuple[Any, ...], full: Any, ids: list[str], at: float, picks: list[int]) -> Any:
    """``fn`` over a bootstrap resample (``picks`` are indices into ``ids``)."""
    return fn(*groups, full, [ids[i] for i in picks], at)


def _diff(a: list[dict[str, Any]], b: list[dict[str, Any]], full: dict[str, Any], ids: list[str], at: float) -> Any:
    x, y = at_ratio(a, full, ids, at), at_ratio(b, full, ids, at)
    return None if x is None or y is None else x - y


TASK_SHAPES = {
    "qa": "text+question",
    "needle": "text+question",
    "narrative": "text+question",
    "korean": "text+question",
    "multidoc": "passages+question",
    "gsm": "passages+question",
    "summary": "no question",
}


def shape_table(rows: list[dict[str, Any]], required: Collection[str] = ()) -> tuple[str, dict[str, str]]:
    """Mean score at the AT_RATIOS over the tasks of each input shape (the evidence behind `auto`'s choices),
    and the best promptshrink method per shape (over the shape's tasks present in ``rows``; systems that miss one
    of them or a ratio are not ranked). A shape with a task of ``required`` missing from ``rows`` gets its table
    rows but no best method (a suite read in part decides only the shapes it has read whole)."""
    lines = ["| input shape (tasks) | system | mean score @ " + "/".join(map(str, AT_RATIOS)) + " |", "|---|---|---|"]
    best: dict[str, str] = {}
    present = {r["task"] for r in rows}
    for shape in sorted(set(TASK_SHAPES.values())):
        tasks = sorted(t for t, s in TASK_SHAPES.items() if s == shape and t in present)
        if not tasks:
            continue
        whole = all(t in present for t, s in TASK_SHAPES.items() if s == shape and t in required)
        means = {}
        for system in sorted({r["system"] for r in rows}):
            cells = [r.get(f"at_{a}") for r in rows if r["system"] == system and r["task"] in tasks for a in AT_RATIOS]
            if len(cells) == len(tasks) * len(AT_RATIOS) and all(cells):
                means[system] = sum(c["score"] for c in cells) / len(cells)
        for system, value in sorted(means.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {shape} ({', '.join(tasks)}) | {system} | {value:.3f} |")
        # what auto could pick: not the peers, not auto itself or its variants (they only delegate)
        ours = {s: v for s, v in means.items() if not s.startswith("peer:") and s.partition(":")[0] != "auto"}
        if ours and whole:
            best[shape] = max(ours, key=ours.get)
    return "\n".join(lines), best


def _cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "–"
    ci = entry["ci"]
    return f"{entry['score']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")


def tables(rows: list[dict[str, Any]], comparisons: list[dict[str, Any]]) -> str:
    """Markdown: score at equal achieved ratio per task (95% CI), then the wins/ties/losses."""
    lines = ["| task | system | items | " + " | ".join(f"score @ {a}" for a in AT_RATIOS) + " |"]
    lines.append("|---" * (3 + len(AT_RATIOS)) + "|")
    for row in rows:
        cells = " | ".join(_cell(row[f"at_{a}"]) for a in AT_RATIOS)
        lines.append(f"| {row['task']} | {row['system']} | {row['items']} | {cells} |")
    lines += [
        "",
        "| task | ratio | best promptshrink | vs | difference [95% CI] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        ci = f" [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]" if c["ci"] else ""
        lines.append(
            f"| {c['task']} | {c['at']} | {c['best']} | {c['baseline']} | {c['diff']:+.2f}{ci} | {c['verdict']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> Path:
    """Reader score against achieved ratio, one panel per task, one line per system (peers dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows})
    systems = sorted({r["system"] for r in rows})
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 4), squeeze=False)
    palette = plt.get_cmap("tab20")
    for ax, task in zip(axes[0], tasks):
        for row in (r for r in rows if r["task"] == task):
            n = systems.index(row["system"])
            style = "--" if row["system"].startswith("peer:") or row["system"] == "tfidf" else "-"
            ax.plot(*zip(*sorted(row["points"])), style, marker="o", ms=3, color=palette(n % 20), label=row["system"])
        ax.set_title(task)
        ax.set_xlabel("achieved ratio")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("reader score (large-lm)")
    axes[0][-1].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--suite", choices=sorted(SUITES), default="quick")
    parser.add_argument(
        "--methods",
        nargs="*",
        help="promptshrink methods, or variants such as auto:adaptive=true (default: quick's list; full: all)",
    )
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--cache", type=Path, default=RESULTS / "reader_cache.jsonl")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--items", type=int, help="items per task (default: the suite's)")
    parser.add_argument("--batch-size", type=int, default=8, help="reader prompts per generate call")
    parser.add_argument("--report", type=Path, help="re-aggregate a results JSON (no compression, no reader)")
    parser.add_argument("--add-to", type=Path, help="run --methods on a saved run's items and add their records")
    args = parser.parse_args(argv)
    if args.report:
        return report(args.report, args.resamples)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    suite = SUITES[args.suite]
    if args.items is not None:
        suite = replace(suite, sizes=dict.fromkeys(suite.sizes, args.items))
    items, missing = load_items(suite, args.seed)
    names = args.methods if args.methods is not None else (QUICK_METHODS if args.suite != "full" else None)
    peers = [] if args.no_peers else [p for p in peer_systems() if p.name in BASELINES]
    ours = promptshrink_systems(names)
    systems: list[System] = [*ours[:1], *peers, *ours[1:]]  # baselines first: an interrupted run can compare
    reader = CachedChatReader(args.cache, batch_size=args.batch_size)
    records, full, skipped = evaluate(systems, items, suite, reader)
    if args.add_to:
        saved = json.loads(args.add_to.read_text())
        added = {s.name for s in systems}
        saved["records"] = [r for r in saved["records"] if r["system"] not in added] + records
        saved["skipped"] = {k: v for k, v in saved["skipped"].items() if k not in added} | skipped
        saved["added"] = saved.get("added", []) + [" ".join(argv if argv is not None else sys.argv[1:])]
        args.add_to.write_text(json.dumps(saved, indent=1))
        return report(args.add_to, args.resamples)
    rows, comparisons = summarise(records, full, args.resamples)
    result = {
        "environment": environment(
            "python -m benchmarks.quality " + " ".join(argv if argv is not None else sys.argv[1:])
        ),
        "suite": args.suite,
        "reader": reader.model_name,
        "data": {task: sum(1 for i in items if i.task == task) for task in suite.sizes} | {"missing": missing},
        "context_tokens": {t: [count(i.context) for i in items if i.task == t] for t in suite.sizes},
        "skipped": skipped,
        "reader_calls": {
            "generated": reader.generated,
            "generation_s": round(reader.generation_s, 1),
            "seconds_per_generation": reader.generation_s / reader.generated if reader.generated else None,
        },
        "full": full,
        "rows": rows,
        "comparisons": comparisons,
        "records": records,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    result["plot"] = str(plot(rows, args.out / f"reader_{args.suite}.png"))
    text, result["auto_evidence"] = shape_table(rows)
    (args.out / f"reader_{args.suite}.json").write_text(json.dumps(result, indent=1))
    print(tables(rows, comparisons) + "\n\n" + text)
    print(f"\nwall {result['wall_s']} s; {reader.generated} reader generations", file=sys.stderr)
    return 0


def report(path: Path, resamples: int) -> int:
    """Recompute rows, comparisons, tables and the plot of a saved run (e.g. after changing the analysis)."""
    result = json.loads(path.read_text())
    result["rows"], result["comparisons"] = summarise(result["records"], result["full"], resamples)
    result["plot"] = str(plot(result["rows"], path.with_suffix(".png")))
    text, result["auto_evidence"] = shape_table(result["rows"])
    path.write_text(json.dumps(result, indent=1))
    print(tables(result["rows"], result["comparisons"]) + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
