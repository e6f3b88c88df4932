"""Speed of the LM-scored methods on one device: ms per 1K tokens per method and peer, and batched throughput.

    python -m benchmarks.throughput --device cpu                       # the bundled LM (real weights)
    python -m benchmarks.throughput --device cuda --random-weights     # the bundled architectures, random weights

One run, same inputs, same LM for every system: 2K-token slices (cl100k_base) of tests/data/article.txt.
1. latency: each LM-scored method (default options, question-aware ones get a question) and the ``llmlingua``
   package's LLMLingua/LongLLMLingua on the same model, p50 of ``--repeats`` calls on one 2K-token input.
2. throughput (tokens/s) of selective_context over 1, 8 and 64 different 2K-token inputs: one by one
   (``compress`` in a loop), batched (``compress_batch``: windows of all inputs packed), and the llmlingua
   peer one by one (it has no batch API).
Speed does not depend on weight values, so ``--random-weights`` builds the bundled model's exact architecture from
its config with seeded random weights (for machines the weights cannot reach); quality is measured elsewhere.
Writes ``throughput_<device>.json``, ``.md`` (table) and ``.png`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import promptshrink
from promptshrink.model_loading import DEFAULT_LM, manifest, resolve_device
from promptshrink.scoring.evaluator_heads import heads_path

from .peers import LONG_OPTIONS

ROOT = Path(__file__).resolve().parents[1]
ARTICLE = ROOT / "tests" / "data" / "article.txt"
QUESTION = "What did the President say about taxes?"
METHODS = {  # method -> options (dspc without its 0.5B second model: that one cannot travel to the GPU box)
    "selective_context": {},
    "llmlingua": {},
    "longllmlingua": {},
    "ehpc": {},
    "dspc": {"large_model": None},
}
PEER_OF = {True: "peer:longllmlingua", False: "peer:llmlingua"}  # question-aware or not -> the comparable peer
CONCURRENCY = (1, 8, 64)


def inputs(count: int, tokens: int = 2000) -> list[str]:
    """``count`` different ``tokens``-token slices of the article (rotating start), in cl100k_base."""
    tok = promptshrink.get_tokenizer()
    ids = tok.encode(ARTICLE.read_text())
    ids = ids * (tokens // len(ids) + 2)
    step = max(1, (len(ids) - tokens) // max(1, count))
    return [tok.encoding.decode(ids[i * step : i * step + tokens]) for i in range(count)]  # type: ignore[attr-defined]


def random_weight_model(work: Path, source: str | None) -> str:
    """Save the bundled LM's architecture with seeded random weights (and its evaluator heads) under ``work``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = source or str(manifest()[DEFAULT_LM].locate())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(source), dtype=torch.float32)
    target = work / "random-lm"
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    heads = heads_path(str(target))  # timing needs the same depth as the bundled calibration, not its heads
    heads.parent.mkdir(parents=True, exist_ok=True)
    heads.write_text(heads_path(DEFAULT_LM).read_text())
    return str(target)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, repeats: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of ``repeats`` calls after a warm-up; CPU time is this process's, which on a shared
    machine does not grow with other jobs' load the way wall time does."""
    fn()  # warm-up: model load, kernels, allocator
    out = []
    for _ in range(repeats):
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        out.append((time.perf_counter() - start, time.process_time() - cpu))
    return out


def peer(model: str, device: str) -> Any:
    """The llmlingua package's PromptCompressor on ``model`` (None when it is not installed)."""
    try:
        from llmlingua import PromptCompressor
    except ImportError:
        return None
    from promptshrink.model_loading import default_dtype

    from .peers import _bundled_tiktoken, _LegacyCacheModel

    _bundled_tiktoken()
    compressor = PromptCompressor(
        model_name=model, device_map=device, model_config={"torch_dtype": default_dtype(device)}
    )
    compressor.model = _LegacyCacheModel(compressor.model)
    return compressor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--random-weights", action="store_true", help="the bundled architecture, random weights")
    parser.add_argument("--arch", help="folder with config.json + tokenizer (default: the bundled LM's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=2000, help="input size (cl100k_base tokens)")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--concurrency", type=int, nargs="*", default=list(CONCURRENCY))
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = resolve_device(args.device)
    work = Path(tempfile.mkdtemp(prefix="promptshrink-speed-"))
    model = random_weight_model(work, args.arch) if args.random_weights else DEFAULT_LM
    try:
        run(args, device, model)
    finally:
        if model != DEFAULT_LM:
            shutil.rmtree(heads_path(model).parent, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def run(args: argparse.Namespace, device: str, model: str) -> None:
    """The measurements of one run (see the module docstring)."""
    texts = inputs(max(args.concurrency + [1]), args.tokens)
    tokens = promptshrink.get_tokenizer().count(texts[0])
    report: dict[str, Any] = {
        "device": device,
        "device_name": _device_name(device),
        "weights": "random (bundled architecture)" if args.random_weights else "bundled",
        "input_tokens": tokens,
        "date": time.strftime("%Y-%m-%d"),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "latency": {},
        "throughput": [],
    }
    print(f"device {device} ({report['device_name']}), {tokens}-token inputs, weights: {report['weights']}")
    for name in args.methods:
        options = {**METHODS.get(name, {}), "model": model}
        aware = promptshrink.get_compressor(name, **options).uses_question
        for question in [QUESTION, None] if aware and name == "selective_context" else [QUESTION if aware else None]:

            def one(name: str = name, options: dict[str, Any] = options, question: str | None = question) -> None:
                promptshrink.compress(texts[0], name, rate=0.5, question=question, device=device, **options)

            label = name if question or not aware else f"{name} (no question)"
            _record(report, label, timed(one, device, args.repeats), tokens, PEER_OF[question is not None])
    compressor = None if args.no_peer else peer(resolve_model_path(model), device)
    if compressor is not None:
        _record(
            report,
            "peer:llmlingua",
            timed(lambda: compressor.compress_prompt(texts[0], rate=0.5), device, args.repeats),
            tokens,
        )
        _record(
            report,
            "peer:longllmlingua",
            timed(
                lambda: compressor.compress_prompt([texts[0]], rate=0.5, question=QUESTION, **LONG_OPTIONS),
                device,
                args.repeats,
            ),
            tokens,
        )
        for row in report["latency"].values():
            peer_row = report["latency"].get(row.get("peer", ""))
            if peer_row:
                row["cpu_vs_peer"] = row["cpu_ms_per_1k"] / peer_row["cpu_ms_per_1k"]
                row["wall_vs_peer"] = row["ms_per_1k"] / peer_row["ms_per_1k"]
    for n in args.concurrency:
        batch = texts[:n]
        row: dict[str, Any] = {"inputs": n, "tokens": n * tokens}

        def loop(batch: list[str] = batch) -> None:
            for t in batch:
                promptshrink.compress(t, "selective_context", rate=0.5, question=QUESTION, device=device, model=model)

        def batched(batch: list[str] = batch) -> None:
            promptshrink.compress_batch(
                batch, "selective_context", rate=0.5, questions=[QUESTION] * len(batch), device=device, model=model
            )

        row["one_by_one_tokens_per_s"] = n * tokens / min(w for w, _ in timed(loop, device, 1 if n > 8 else 2))
        row["batched_tokens_per_s"] = n * tokens / min(w for w, _ in timed(batched, device, 2))
        if compressor is not None and n <= 8:  # the peer is sequential: 64 inputs only multiply its time
            row["peer_tokens_per_s"] = (
                n
                * tokens
                / min(
                    w for w, _ in timed(lambda b=batch: [compressor.compress_prompt(t, rate=0.5) for t in b], device, 1)
                )
            )
        report["throughput"].append(row)
        print({k: round(v) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    write(report, args.out, device.split(":")[0])


def resolve_model_path(model: str) -> str:
    from promptshrink.model_loading import resolve

    return resolve(model)[0]


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def _record(
    report: dict[str, Any], name: str, times: list[tuple[float, float]], tokens: int, peer: str | None = None
) -> None:
    """p50 wall and CPU time of ``name``; ``peer`` names the peer row it is compared with."""
    wall, cpu = statistics.median(w for w, _ in times), statistics.median(c for _, c in times)
    row = {
        "calls": len(times),
        "p50_ms": wall * 1000,
        "ms_per_1k": wall * 1e6 / tokens,
        "cpu_ms_per_1k": cpu * 1e6 / tokens,
    }
    report["latency"][name] = {**row, "peer": peer} if peer else row
    print(
        f"{name:<32} p50 {wall * 1000:9.1f} ms ({row['ms_per_1k']:8.1f} ms, CPU {row['cpu_ms_per_1k']:8.1f} ms per 1K)",
        flush=True,
    )


def write(report: dict[str, Any], out: Path, tag: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"throughput_{tag}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        f"{report['date']}, {report['device_name']} ({report['device']}), weights: {report['weights']}, "
        f"{report['input_tokens']}-token inputs",
        "",
        "| system | p50 ms (one input) | ms per 1K tokens | CPU ms per 1K tokens | compared with | CPU time vs peer |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{k}` | {v['p50_ms']:.1f} | {v['ms_per_1k']:.1f} | {v['cpu_ms_per_1k']:.1f} | {v.get('peer', '-')} | "
        + (f"{v['cpu_vs_peer']:.2f}x |" if "cpu_vs_peer" in v else "- |")
        for k, v in report["latency"].items()
    ]
    lines += ["", "| inputs | one by one tokens/s | batched tokens/s | llmlingua peer tokens/s |", "|---|---|---|---|"]
    for row in report["throughput"]:
        peer_rate = f"{row['peer_tokens_per_s']:,.0f}" if "peer_tokens_per_s" in row else "-"
        lines.append(
            f"| {row['inputs']} | {row['one_by_one_tokens_per_s']:,.0f} | {row['batched_tokens_per_s']:,.0f} | "
            f"{peer_rate} |"
        )
    (out / f"throughput_{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = list(report["latency"])
    left.barh(names, [report["latency"][n]["ms_per_1k"] for n in names])
    left.set_xscale("log")
    left.set_xlabel("ms per 1K tokens (p50, log)")
    counts = [r["inputs"] for r in report["throughput"]]
    for key, label in (
        ("one_by_one_tokens_per_s", "one by one"),
        ("batched_tokens_per_s", "batched"),
        ("peer_tokens_per_s", "llmlingua peer"),
    ):
        pts = [(r["inputs"], r[key]) for r in report["throughput"] if key in r]
        if pts:
            right.plot(*zip(*pts), marker="o", label=label)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xticks(counts, [str(c) for c in counts])
    right.set_xlabel("inputs (2K tokens each)")
    right.set_ylabel("tokens/s (selective_context)")
    right.legend()
    fig.suptitle(f"{report['device_name']}: {report['weights']} weights")
    fig.tight_layout()
    fig.savefig(out / f"throughput_{tag}.png", dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
