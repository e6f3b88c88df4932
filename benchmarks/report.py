"""Aggregation of per-call records into table rows, peer comparisons, the printed table and the plots."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from .metrics import ll_retained
from .speed import Timing, summarize

MATCHED = {
    "peer:llmlingua": "llmlingua",
    "peer:longllmlingua": "longllmlingua",
    "peer:llmlingua-2": "llmlingua",
    "peer:selective-context": "selective_context",
}
COLUMNS = ("system", "budget", "items", "ratio", "answer kept", "LL retained")
COLUMNS += ("ms/1K p50", "ms/1K p95", "tok/s", "heap MB", "RSS Δ MB")


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(records: list[dict[str, Any]], ids: set[str] | None = None) -> dict[str, Any]:
    """Quality of one system at one budget over its records (optionally only the items in ``ids``)."""
    recs = [r for r in records if ids is None or r["item"] in ids]
    with_answer = [r for r in recs if r["retained"] is not None]
    with_ll = [r for r in recs if r.get("nll") is not None]
    row: dict[str, Any] = {
        "items": len(recs),
        "ratio": _mean([r["compressed_tokens"] / r["original_tokens"] for r in recs]),
        "retention": _mean([float(r["retained"]) for r in with_answer]),
        "ll_retained": ll_retained([r["full_nll"] for r in with_ll], [r["nll"] for r in with_ll]),
        "per_task": {},
    }
    for task in sorted({r["task"] for r in recs}):
        sub = [r for r in recs if r["task"] == task]
        sub_ll = [r for r in sub if r.get("nll") is not None]
        answered = [float(r["retained"]) for r in sub if r["retained"] is not None]
        row["per_task"][task] = {
            "items": len(sub),
            "ratio": _mean([r["compressed_tokens"] / r["original_tokens"] for r in sub]),
            "retention": _mean(answered),
            "ll_retained": ll_retained([r["full_nll"] for r in sub_ll], [r["nll"] for r in sub_ll]),
        }
    for key in ("em", "f1"):
        scored = [r[key] for r in recs if r.get(key) is not None]
        if scored:
            row[key] = _mean(scored)
    return row


def build_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (system, budget) with quality, plus the system's speed over all its timed calls."""
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_key[(r["system"], r["budget"])].append(r)
    speed = {
        s: summarize([Timing(r["original_tokens"], r["seconds"]) for r in records if r["system"] == s])
        for s in {r["system"] for r in records}
    }
    return [{"system": s, "budget": b, **aggregate(recs), **speed[s]} for (s, b), recs in by_key.items()]


def compare(records: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """promptshrink / peer ratio of every metric, per budget, on the items both ran (matched and best method).

    Each pair is reported twice: over all shared items, and over the items where the peer kept to the budget
    (at most 10% over the limit), since a peer that does not compress an item keeps its answer trivially.
    """
    out = []
    speed = {r["system"]: r for r in rows}
    for peer in sorted({r["system"] for r in records if r["system"].startswith("peer:")}):
        for budget in sorted({r["budget"] for r in records}):
            peer_recs = [r for r in records if r["system"] == peer and r["budget"] == budget]
            within = {r["item"] for r in peer_recs if r["compressed_tokens"] <= 1.1 * r["limit"]}
            for scope, base in (("all", {r["item"] for r in peer_recs}), ("peer within budget", within)):
                out += _pairs(records, peer, budget, base, speed, scope)
    return out


def _pairs(
    records: list[dict[str, Any]], peer: str, budget: str, base: set[str], speed: dict[str, Any], scope: str
) -> list[dict[str, Any]]:
    peer_recs = [r for r in records if r["system"] == peer and r["budget"] == budget]
    ours = defaultdict(list)
    for r in records:
        if r["budget"] == budget and not r["system"].startswith("peer:"):
            ours[r["system"]].append(r)
    scored = {}
    for name, recs in ours.items():
        ids = base & {r["item"] for r in recs}
        if ids:
            scored[name] = (aggregate(recs, ids), aggregate(peer_recs, ids))
    full = [n for n in scored if scored[n][0]["items"] == len(base)]  # best only among full coverage
    best = max(full, key=lambda n: (scored[n][0]["retention"] or 0, scored[n][0]["ll_retained"] or 0), default=None)
    out = []
    for role, name in (("matched", MATCHED.get(peer)), ("best", best)):
        if name not in scored or (role == "best" and name == MATCHED.get(peer)):
            continue
        mine, theirs = scored[name]
        entry = {"peer": peer, "budget": budget, "scope": scope, "role": role, "method": name, "items": mine["items"]}
        for metric in ("ratio", "retention", "ll_retained"):
            entry[metric] = _ratio(mine[metric], theirs[metric])
        for metric in ("ms_per_1k_p50", "tokens_per_s"):
            entry[metric] = _ratio(speed[name][metric], speed[peer][metric])
        out.append(entry)
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _fmt(value: Any, digits: int = 2, style: str = "f") -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}{style}}" if isinstance(value, float) else str(value)


def table(rows: list[dict[str, Any]], skipped: dict[str, str]) -> str:
    """Markdown table: one line per system and budget, then the systems that were skipped and why."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---" * len(COLUMNS) + "|"]
    for r in sorted(rows, key=lambda r: (r["system"].startswith("peer:"), r["system"], r["budget"])):
        cells = [
            r["system"],
            r["budget"],
            r["items"],
            _fmt(r.get("ratio")),
            _fmt(r.get("retention")),
            _fmt(r.get("ll_retained")),
            _fmt(r.get("ms_per_1k_p50"), 0),
            _fmt(r.get("ms_per_1k_p95"), 0),
            _fmt(r.get("tokens_per_s"), 0),
            _fmt(r.get("heap_peak_mb"), 1),
            _fmt(r.get("rss_delta_mb"), 0),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines += [f"| {name} | skipped: {why} |" + " |" * 9 for name, why in sorted(skipped.items())]
    return "\n".join(lines)


TASKS = ("qa", "multidoc", "needle", "gsm")


def task_table(rows: list[dict[str, Any]]) -> str:
    """Per-task achieved ratio / answer kept / LL retained of every system and budget."""
    columns = ("system", "budget", *(f"{t} ratio / kept / LL" for t in TASKS))
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for r in sorted(rows, key=lambda r: (r["system"].startswith("peer:"), r["system"], r["budget"])):
        cells = [r["system"], r["budget"]]
        for task in TASKS:
            t = r["per_task"].get(task)
            cells.append(" / ".join(_fmt(t[k]) for k in ("ratio", "retention", "ll_retained")) if t else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def comparison_table(comparisons: list[dict[str, Any]]) -> str:
    columns = ("peer", "budget", "items compared", "promptshrink method", "n", "ratio", "answer kept", "LL retained")
    columns += ("ms/1K p50", "tok/s")
    lines = ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]
    for c in comparisons:
        cells = [c["peer"], c["budget"], c["scope"], f"{c['method']} ({c['role']})", c["items"]]
        cells += [_fmt(c[m], 3, "g") for m in ("ratio", "retention", "ll_retained", "ms_per_1k_p50", "tokens_per_s")]
        lines.append("| " + " | ".join(str(x) for x in cells) + " |")
    return "\n".join(lines)


def plots(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """quality_vs_ratio.png (answer kept and LL retained against achieved ratio) and latency.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = sorted({r["system"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    palette = plt.get_cmap("tab20")
    for n, name in enumerate(systems):
        pts = sorted((r["ratio"], r["retention"], r["ll_retained"]) for r in rows if r["system"] == name)
        style = {"linestyle": "--" if name.startswith("peer:") else "-", "marker": "osD^v<>"[n % 7]}
        for ax, k in zip(axes, (1, 2)):
            xy = [(p[0], p[k]) for p in pts if p[k] is not None]
            if xy:
                ax.plot(*zip(*xy), color=palette(n % 20), label=name, **style)
    for ax, label in zip(axes, ("answer retention", "LL retained (full NLL / compressed NLL)")):
        ax.set_xlabel("achieved ratio (compressed / original tokens)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    quality = out_dir / "quality_vs_ratio.png"
    fig.savefig(quality, dpi=110)
    plt.close(fig)

    speed = {r["system"]: r for r in rows}
    names = sorted(speed, key=lambda n: speed[n]["ms_per_1k_p50"] or 0)
    p50 = [speed[n]["ms_per_1k_p50"] or 0 for n in names]
    p95 = [max(0.0, (speed[n]["ms_per_1k_p95"] or 0) - v) for n, v in zip(names, p50)]
    fig, ax = plt.subplots(figsize=(9, 0.4 * len(names) + 1.5))
    colors = ["#c44" if n.startswith("peer:") else "#48c" for n in names]
    ax.barh(names, p50, xerr=[[0] * len(names), p95], color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("compression latency, ms per 1K input tokens (bar p50, whisker p95; CPU)")
    fig.tight_layout()
    latency = out_dir / "latency.png"
    fig.savefig(latency, dpi=110)
    plt.close(fig)
    return [quality, latency]


def main(argv: list[str] | None = None) -> int:
    """Re-render the tables and plots of a results JSON: `python -m benchmarks.report results/quick.json`."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path)
    args = parser.parse_args(argv)
    result = json.loads(args.results.read_text())
    print(table(result["rows"], result["skipped"]))
    print("\nper task:\n" + task_table(result["rows"]))
    print("\npromptshrink / peer:\n" + comparison_table(result["comparisons"]))
    plots(result["rows"], args.results.parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
