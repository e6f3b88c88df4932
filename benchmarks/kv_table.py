"""Markdown tables from kv_speed.json and kv_quality.json.

python benchmarks/kv_table.py benchmarks/results_kv/kv_speed.json benchmarks/results_kv/kv_quality.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def speed_table(data: dict) -> str:
    m = data["meta"]
    bw = f"measured copy bandwidth {m['copy_bw_GBps']:.0f} GB/s" if m.get("copy_bw_GBps") else "no bandwidth bound"
    lines = [
        f"Device: {m['device']}, torch {m['torch']}, {bw}.",
        "",
        "| ctx | method | ratio | prefill s | overhead % | KV GB (saved %) | attn/step ms (full) | KV floor ms"
        " | attn speed-up | HF decode tok/s (full) | HF speed-up | bound tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in data["rows"]:
        attn = r["attn_ms"]
        lines.append(
            f"| {r['ctx'] / 1024:g}K | {r['method']} | {r['ratio']} | {r['prefill_s']:.2f} | {r['overhead_pct']:.1f}"
            f" | {r['kv_GB']:.3f} ({r['mem_saved_pct']:.0f}) | {_num(attn, '.2f')} ({r['full_attn_ms']:.2f})"
            f" | {_num(r['kv_floor_ms'], '.2f')} | {_num(attn and r['full_attn_ms'] / attn, '.2f')}x"
            f" | {r['tok_s']:.1f} ({r['full_tok_s']:.1f}) | {r['speedup']:.2f}x | {_num(r['bound_tok_s'], '.0f')} |"
        )
    return "\n".join(lines)


def quality_table(data: dict) -> str:
    rows = {(r["method"], r["ratio"]): r for r in data["rows"]}
    full = rows[("full", 1.0)]
    lines = [
        f"Model: {data['model']} on {data['device']}, context {data['ctx']} tokens, {data['samples']} needles at spread"
        f" depths (needle accuracy = share of them found, ±{0.5 / data['samples'] ** 0.5:.2f} max. std. error);"
        f" KL/PPL over a 64-token continuation, first {data['kl_samples']} samples; run took {data['seconds']} s.",
        "",
        "| method | ratio | needle acc, query-agnostic | needle acc, question-aware | KL vs full (nats/token)"
        " | PPL (full) | quality retained (PPL full/PPL) |",
        "|---|---|---|---|---|---|---|",
    ]
    for (m, ratio), r in rows.items():
        lines.append(
            f"| {m} | {ratio} | {r['needle_agnostic']:.2f} | {r['needle_question']:.2f} | {r['kl']:.4f}"
            f" | {r['ppl']:.2f} ({full['ppl']:.2f}) | {100 * full['ppl'] / r['ppl']:.0f}% |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        data = json.loads(Path(arg).read_text())
        print(speed_table(data) if "meta" in data else quality_table(data), end="\n\n")
