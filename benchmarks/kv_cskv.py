"""CSKV on a real model: KV memory held against quality, per channel density, next to StreamingLLM at equal memory.

    python -m benchmarks.kv_cskv [--model default-lm] [--ctx 1024] [--samples 20] [--densities 0.5 0.625 0.75 0.875]

For each sample, a passkey sentence is placed in ``--ctx`` tokens of the 1986 State of the Union address
(tests/data/article.txt, as ``kv_quality``; needle depths spread evenly). Each system prefills the context alone
(query-agnostic: the question comes after), then: needle accuracy (the five digits in 6 greedy tokens after the
question), and the KL divergence from the full cache's next-token distributions over the 64 tokens that follow
the context (teacher-forced). Memory is the bytes the cache holds between steps after prefill, as a share of the
full cache: CSKV's ``press.stats`` (coefficients, recent window, bases), StreamingLLM's kept entries at the ratio
that holds the same share (or the full cache where CSKV holds more than it: its bases cost channels x rank x 4
bytes per layer, which a short context does not repay). Writes ``results_kv/kv_cskv.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from promptshrink import kv
from promptshrink.kv.pipeline import decode, forward_tokens

from .run import environment

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "tests" / "data" / "article.txt").read_text()
QUESTION = "\nWhat is the secret passkey? The secret passkey is"
OUT = Path(__file__).resolve().parent / "results_kv"


def cache_bytes(cache: Any) -> int:
    """Bytes of the keys and values a plain cache holds."""
    return sum(2 * layer.keys.numel() * layer.keys.element_size() for layer in cache.layers)


def run_system(
    model: Any,
    press: kv.BasePress | None,
    context: torch.Tensor,
    question: torch.Tensor,
    cont: torch.Tensor,
    ref: torch.Tensor | None,
    code: str,
    tok: Any,
) -> dict[str, float]:
    """Needle hit, KL from ``ref`` and memory share of one system on one sample."""
    n = context.shape[1]
    cache = kv.prefill(model, context, press)
    full = cache_bytes(kv.prefill(model, context))
    held = press.stats["stored_bytes"] if isinstance(press, kv.CSKVPress) else cache_bytes(cache)
    answer = tok.decode(decode(model, cache, question, n, 6, press=press))
    row = {"needle": float(code in answer), "memory": held / full}
    if ref is not None:
        logits = forward_tokens(model, kv.prefill(model, context, press), cont, n).float().log_softmax(-1)
        row["kl"] = float((ref.exp() * (ref - logits)).sum(-1).mean())
    return row


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default-lm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--densities", type=float, nargs="+", default=[0.5, 0.625, 0.75, 0.875])
    ap.add_argument("--out", type=Path, default=OUT / "kv_cskv.json")
    args = ap.parse_args(argv)
    from promptshrink.model_loading import load_causal_lm

    started = time.perf_counter()
    model, tok = load_causal_lm(args.model, device=args.device)
    dev = next(model.parameters()).device
    ids = tok(TEXT, return_tensors="pt").input_ids[0].to(dev)
    question = tok(QUESTION, add_special_tokens=False, return_tensors="pt").input_ids.to(dev)
    rng = random.Random(0)
    systems: list[tuple[str, float]] = [("full", 1.0)] + [("cskv", d) for d in args.densities]
    sums: dict[tuple[str, float], dict[str, float]] = {}
    for s in range(args.samples):
        code = str(rng.randint(10000, 99999))
        needle = tok(f" The secret passkey is {code}. Remember it. ", add_special_tokens=False).input_ids
        start = rng.randint(0, len(ids) - args.ctx - 80)
        body = ids[start : start + args.ctx]
        at = int(len(body) * (s + 0.5) / args.samples)
        context = torch.cat([body[:at], torch.tensor(needle, device=dev), body[at:]])[None]
        cont = ids[start + args.ctx : start + args.ctx + 64][None]
        ref = forward_tokens(model, kv.prefill(model, context), cont, context.shape[1]).float().log_softmax(-1)
        rows = {}
        for name, density in systems:
            press = None if name == "full" else kv.make_press("cskv", ratio=density, window=args.window)
            rows[(name, density)] = run_system(model, press, context, question, cont, ref, code, tok)
            if name == "cskv":  # StreamingLLM keeping the same share of the cache
                share = min(1.0, rows[(name, density)]["memory"])  # above 1 (short contexts): the full cache
                streaming = kv.make_press("streaming_llm", ratio=share)
                rows[("streaming_llm", density)] = run_system(model, streaming, context, question, cont, ref, code, tok)
        for key, row in rows.items():
            total = sums.setdefault(key, {})
            for k, v in row.items():
                total[k] = total.get(k, 0.0) + v / args.samples
        print(f"sample {s + 1}/{args.samples} at {time.perf_counter() - started:.0f} s", flush=True)
    out = [{"system": n, "density": d, **{k: round(v, 4) for k, v in m.items()}} for (n, d), m in sums.items()]
    result = {
        "environment": environment(f"python -m benchmarks.kv_cskv --ctx {args.ctx} --samples {args.samples}"),
        "model": args.model,
        "ctx": args.ctx,
        "samples": args.samples,
        "window": args.window,
        "seconds": round(time.perf_counter() - started),
        "rows": out,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    text = table(out)
    args.out.with_suffix(".md").write_text(text + "\n")
    print(text)
    try:
        plot(out, args.out.with_suffix(".png"))
    except ImportError:
        print("no matplotlib: no plot")
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| system | CSKV density | memory held (share of full) | needle accuracy | KL vs full (nats) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        density = "–" if r["system"] == "full" else f"{r['density']:g}"
        lines.append(f"| {r['system']} | {density} | {r['memory']:.3f} | {r['needle']:.2f} | {r.get('kl', 0):.4f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for name in ("cskv", "streaming_llm"):
        pts = sorted((r["memory"], r["needle"], r.get("kl", 0.0)) for r in rows if r["system"] == name)
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
        axes[1].plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=name)
    axes[0].set(xlabel="KV memory held (share of full)", ylabel="needle accuracy")
    axes[1].set(xlabel="KV memory held (share of full)", ylabel="KL vs full cache (nats)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
