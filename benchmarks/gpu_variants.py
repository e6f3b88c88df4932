"""Side-by-side timings of the LM text path's GPU variants in one process: eager Hugging Face layers, CUDA graphs
of the eager layers, CUDA graphs of the fused Llama forward (the default on CUDA).

    python -m benchmarks.gpu_variants --arch <folder with config.json + tokenizer> --out <dir>

Random weights of the given architecture (speed does not depend on weight values). Prints a table and writes
``gpu_variants_cuda.{json,md,png}`` under ``--out``: per variant, p50 ms of one 2K-token selective_context request
(question-aware), of its LM passes alone and of segmentation alone, the GPU time of one request (profiler),
batched tokens/s over 8 and 64 inputs, and the agreement of scores and keep decisions with the eager path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import promptshrink as ps
from promptshrink.scoring import fused_llama, lm
from promptshrink.segmentation import protected_spans, segment

from .throughput import QUESTION, inputs, random_weight_model


def p50_ms(fn: Any, repeats: int) -> float:
    import torch

    fn()
    out = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return statistics.median(out) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", required=True)
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    import torch

    model = random_weight_model(Path(tempfile.mkdtemp()), args.arch)
    texts = inputs(64)
    tokens = ps.get_tokenizer().count(texts[0])
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "tokens": tokens, "variants": {}}

    def one() -> ps.CompressionResult:
        return ps.compress(texts[0], "selective_context", rate=0.5, question=QUESTION, device="cuda", model=model)

    def passes() -> None:
        lm.surprisal_many([texts[0], texts[0]], model, [None, f"Question: {QUESTION}\n"])

    def seg() -> None:
        segment(texts[0], "phrase", protected_spans(texts[0]))

    def batched(n: int) -> list[ps.CompressionResult]:
        return ps.compress_batch(
            texts[:n], "selective_context", rate=0.5, questions=[QUESTION] * n, device="cuda", model=model
        )

    report["segmentation_ms"] = p50_ms(seg, args.repeats)
    reference: dict[str, Any] = {}
    supports = fused_llama.supports
    for name in ("eager", "graphs_hf_layers", "graphs_fused"):
        os.environ[lm.GRAPHS_ENV] = "0" if name == "eager" else "1"
        fused_llama.supports = supports if name == "graphs_fused" else (lambda model: False)
        lm._RUNNERS.clear()
        fused_llama._FUSED.clear()
        start = time.perf_counter()
        one()  # captures this variant's graphs
        row: dict[str, Any] = {"first_call_s": time.perf_counter() - start}
        row["request_p50_ms"] = p50_ms(one, args.repeats)
        row["passes_p50_ms"] = p50_ms(passes, args.repeats)
        row["request_gpu_ms"] = gpu_ms(one)
        for n in (8, 64):
            batched(n)  # warm-up: new shapes
            row[f"batched_{n}_tokens_per_s"] = n * tokens / (p50_ms(lambda n=n: batched(n), 3) / 1000)
        scores = lm.surprisal_many(texts[:8], model, [None] * 8)
        results = batched(64)
        if name == "eager":
            reference = {"scores": scores, "results": results}
        else:
            ref = np.concatenate([s.values for s in reference["scores"]])
            got = np.concatenate([s.values for s in scores])
            row["score_max_abs_bits"] = float(np.abs(got - ref).max())
            row["score_rel_l2"] = float(np.linalg.norm(got - ref) / np.linalg.norm(ref))
            keep = [
                a.kept == b.kept for x, y in zip(reference["results"], results) for a, b in zip(x.segments, y.segments)
            ]
            row["keep_agreement"] = float(np.mean(keep))
        report["variants"][name] = row
        print(name, {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    write(report, args.out)


def write(report: dict[str, Any], out: Path) -> None:
    """``gpu_variants_cuda.json``, ``.md`` (table) and ``.png`` (request latency and batched throughput)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_variants_cuda.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"{report['device']}, {report['tokens']}-token inputs, selective_context (question-aware), random weights; "
        f"phrase segmentation alone p50 {report['segmentation_ms']:.2f} ms",
        "",
        "| variant | request p50 ms | LM passes p50 ms | request GPU ms | batched 8, tokens/s | batched 64, tokens/s "
        "| keep decisions = eager | score rel. L2 vs eager |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["variants"].items():
        agree = f"{row['keep_agreement']:.2%} | {row['score_rel_l2']:.1e}" if "keep_agreement" in row else "ref | ref"
        lines.append(
            f"| {name} | {row['request_p50_ms']:.1f} | {row['passes_p50_ms']:.1f} | {row['request_gpu_ms']:.1f} | "
            f"{row['batched_8_tokens_per_s']:,.0f} | {row['batched_64_tokens_per_s']:,.0f} | {agree} |"
        )
    (out / "gpu_variants_cuda.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    names = list(report["variants"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    left.barh(names, [report["variants"][n]["request_p50_ms"] for n in names], label="request p50")
    left.barh(names, [report["variants"][n]["request_gpu_ms"] for n in names], label="of which GPU busy")
    left.set_xlabel("ms, one 2K-token request")
    left.legend()
    right.barh(names, [report["variants"][n]["batched_64_tokens_per_s"] / 1000 for n in names])
    right.set_xlabel("K tokens/s, 64 inputs batched")
    fig.suptitle(f"{report['device']}: LM text path variants")
    fig.tight_layout()
    fig.savefig(out / "gpu_variants_cuda.png", dpi=110)


def gpu_ms(fn: Any) -> float:
    """Device time of the kernels ``fn`` runs (torch profiler), in ms."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages()) / 1000


if __name__ == "__main__":
    main()
