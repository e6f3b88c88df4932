"""KV press speed and memory at Llama-3-8B shapes with random bf16 weights (GPU).

Per context length: plain prefill time; prefill with window-query capture; per method and ratio, compression time
over all layers (overhead = capture extra + compression, as % of plain prefill), kept KV bytes, decode tokens/s
versus the full cache, and the bandwidth bound (weights + kept KV bytes per step over measured copy bandwidth).

    python benchmarks/kv_speed.py --contexts 8192 32768 65536 --out $OUT/kv_speed.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from kv_common import METHODS, apply, build_cache, capture_prefill, kv_bytes, make_press
from transformers import LlamaConfig, LlamaForCausalLM

from promptshrink import kv
from promptshrink.kv.pipeline import step

LLAMA3_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=False,
)  # fmt: skip


def timed(fn, reps: int = 1) -> tuple[float, object]:  # noqa: ANN001
    """Median wall time (s) of ``fn`` after one warm-up, with device synchronisation."""
    out = fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out


def copy_bandwidth() -> float:
    import triton.testing

    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), return_mode="median")
    return 2 * x.numel() / (ms / 1e3)


def decode_rate(model, layers, start: int, steps: int) -> float:  # noqa: ANN001
    """End-to-end HF decode tokens/s (cache construction excluded), median of 2 runs after a warm-up."""
    times = []
    for _ in range(3):
        cache = build_cache(layers)
        tok = torch.ones(1, 1, dtype=torch.long, device="cuda")
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(steps):
            tok = step(model, cache, tok, start + i)[:, -1].argmax(-1, keepdim=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return steps / min(times[1:])


def attention_ms(layers) -> float:  # noqa: ANN001
    """One decode step's attention over the cache, all layers (SDPA, GQA): the part that scales with kept KV."""
    import triton.testing

    q = torch.randn(1, 32, 1, layers[0][0].shape[-1], device="cuda", dtype=layers[0][0].dtype)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    return triton.testing.do_bench(lambda: [sdpa(q, k, v, enable_gqa=True) for k, v in layers], return_mode="median")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768, 65536])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--out", default="kv_speed.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    cfg = LlamaConfig(**{**LLAMA3_8B, "num_hidden_layers": args.layers})
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = copy_bandwidth()
    filters = kv.compute_qfilters(model, [torch.randint(0, cfg.vocab_size, (1, 1024))], max_queries=2048)
    rows = []
    meta = dict(device=torch.cuda.get_device_name(), torch=torch.__version__, copy_bw_GBps=bw / 1e9)
    print(json.dumps(meta), flush=True)
    for ctx in args.contexts:
        ids = torch.randint(0, cfg.vocab_size, (1, ctx), device="cuda")
        t_plain, cache = timed(lambda: kv.prefill(model, ids), reps=2)  # noqa: B023
        del cache
        torch.cuda.empty_cache()
        t_cap, captured = timed(lambda: capture_prefill(model, ids), reps=2)  # noqa: B023
        cache, cap = captured
        full = [(layer.keys, layer.values) for layer in cache.layers]
        full_bytes = kv_bytes(full)
        full_rate = decode_rate(model, full, ctx, args.decode_steps)
        base = dict(ctx=ctx, prefill_s=t_plain, capture_s=t_cap, full_kv_GB=full_bytes / 1e9, full_tok_s=full_rate)
        base.update(full_bound_tok_s=bw / (weight_bytes + full_bytes), full_attn_ms=attention_ms(full))
        print(json.dumps(base), flush=True)
        for name in args.methods:
            for ratio in args.ratios:
                press = make_press(name, ratio, filters)
                t_comp, kept = timed(lambda: apply(press, cache, cap), reps=3)  # noqa: B023
                kept_bytes = kv_bytes(kept)
                rate = decode_rate(model, kept, ctx, args.decode_steps)
                row = dict(
                    base, method=name, ratio=ratio, compress_s=t_comp,
                    overhead_pct=100 * (t_comp + max(0.0, t_cap - t_plain)) / t_plain,
                    kv_GB=kept_bytes / 1e9, mem_saved_pct=100 * (1 - kept_bytes / full_bytes),
                    tok_s=rate, speedup=rate / full_rate, bound_tok_s=bw / (weight_bytes + kept_bytes),
                    attn_ms=attention_ms(kept), kv_floor_ms=1e3 * kept_bytes / bw,
                )  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
                del kept
                with open(args.out, "w") as f:
                    json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
