"""EHPC depth/quality curve: how shallow can the early exit go before retrieval quality drops?

    OMP_NUM_THREADS=1 python -m benchmarks.ehpc_depth                 # needle + qa items, rates 0.25 and 0.1
    python -m benchmarks.ehpc_depth --depths 5 9 14 18 29 --items 8   # a quicker curve

For each ``max_layer`` cap the EHPC method reads the calibration's top-k heads among layers <= the cap (the LM runs
only that deep) and compresses the benchmark's needle and single-passage QA items (``benchmarks.data``: real
speeches with a seeded needle, DisflQA paragraphs; not the calibration probes) at each rate. Quality is "answer
kept" (the gold answer survives compression), per task; speed is the CPU time of one call on a 2K-token input
against the same method with every layer run (cap = last layer), so the speed-up does not depend on other load.
Writes ``ehpc_depth.json``, ``.md`` (table) and ``.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import promptshrink
from promptshrink.methods.ehpc import EHPCCompressor
from promptshrink.model_loading import DEFAULT_LM, load_causal_lm
from promptshrink.scoring.attention import text_attention

from .data import load_needle, load_qa
from .metrics import answer_retained, bootstrap_ci
from .throughput import inputs

ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (3, 5, 7, 9, 11, 14, 18, 23, 29)
RATES = (0.25, 0.1)


def cpu_seconds(heads: dict[int, list[int]], text: str, question: str, repeats: int) -> float:
    """Median CPU time (this process) of EHPC's LM part on ``text``: the layers up to the deepest of ``heads``."""
    text_attention(text, DEFAULT_LM, heads, question)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.process_time()
        text_attention(text, DEFAULT_LM, heads, question)
        times.append(time.process_time() - start)
    return statistics.median(times)


def run(depths: list[int], items: int, repeats: int) -> dict[str, Any]:
    """The curve: per depth, CPU time and answer kept per task and rate."""
    layers = load_causal_lm()[0].config.num_hidden_layers
    data = load_needle(items) + load_qa(2 * items)
    probe = inputs(1)[0]
    question = "What did the President say about taxes?"
    tokens = promptshrink.get_tokenizer().count(probe)
    full_pass = cpu_seconds({layers - 1: [0]}, probe, question, repeats) * 1e6 / tokens  # every layer runs
    rows = []
    for depth in sorted({min(d, layers - 1) for d in depths}):
        compressor = EHPCCompressor(max_layer=depth)
        row: dict[str, Any] = {"max_layer": depth, "layers_run": max(compressor.heads) + 1}
        row["heads"] = [[layer, h] for layer, hs in sorted(compressor.heads.items()) for h in hs]
        row["cpu_ms_per_1k"] = cpu_seconds(compressor.heads, probe, question, repeats) * 1e6 / tokens
        for rate in RATES:
            for task in ("needle", "qa"):
                picked = [i for i in data if i.task == task]
                outs = [
                    promptshrink.compress(i.context, "ehpc", rate=rate, question=i.question, max_layer=depth).text
                    for i in picked
                ]
                kept = [float(answer_retained(out, i.answers)) for out, i in zip(outs, picked)]
                ci = bootstrap_ci(lambda idx, k=kept: statistics.fmean(k[i] for i in idx), len(kept))
                mean = statistics.fmean(kept)
                row[f"{task}@{rate}"] = {"kept": mean, "ci": list(ci or (mean, mean)), "items": len(kept)}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "heads"}), flush=True)
    for row in rows:
        row["speedup_vs_all_layers"] = full_pass / row["cpu_ms_per_1k"]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "probe_tokens": tokens,
        "all_layers_cpu_ms_per_1k": full_pass,
        "layers": layers,
        "rows": rows,
    }


def write(report: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "ehpc_depth.json").write_text(json.dumps(report, indent=2) + "\n")
    cells = [f"{task}@{rate}" for rate in RATES for task in ("needle", "qa")]
    lines = [
        f"{report['date']}, {report['machine']}, {report['probe_tokens']}-token probe for speed, "
        f"{report['layers']} layers (all layers: {report['all_layers_cpu_ms_per_1k']:.0f} CPU ms per 1K tokens)",
        "",
        "| max_layer | layers run | CPU ms per 1K tokens | speed-up vs all layers | "
        + " | ".join(f"kept {c}" for c in cells)
        + " |",
        "|---" * (4 + len(cells)) + "|",
    ]
    for row in report["rows"]:
        kept = [f"{row[c]['kept']:.2f} [{row[c]['ci'][0]:.2f}, {row[c]['ci'][1]:.2f}]" for c in cells]
        lines.append(
            f"| {row['max_layer']} | {row['layers_run']} | {row['cpu_ms_per_1k']:.0f} | "
            f"{row['speedup_vs_all_layers']:.2f}x | " + " | ".join(kept) + " |"
        )
    (out / "ehpc_depth.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    x = [row["layers_run"] for row in report["rows"]]
    for cell in cells:
        ax.plot(x, [row[cell]["kept"] for row in report["rows"]], marker="o", label=f"answer kept, {cell}")
    ax.set_xlabel("layers run (early exit)")
    ax.set_ylabel("answer kept")
    ax.set_ylim(0, 1.05)
    twin = ax.twinx()
    twin.plot(x, [row["speedup_vs_all_layers"] for row in report["rows"]], "k--", label="speed-up vs all layers")
    twin.set_ylabel("speed-up vs all layers (CPU time)")
    ax.legend(loc="lower right", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    ax.set_title("EHPC: early-exit depth against retrieval quality")
    fig.tight_layout()
    fig.savefig(out / "ehpc_depth.png", dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--depths", type=int, nargs="*", default=list(DEPTHS))
    parser.add_argument("--items", type=int, default=12, help="needle items (QA items: twice as many)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    write(run(args.depths, args.items, args.repeats), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
