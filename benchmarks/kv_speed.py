"""KV press speed and memory at Llama-3-8B shapes with random bf16 weights (GPU), or small shapes on CPU.

Per context length: plain prefill time; prefill with window-query capture; per method and ratio, compression time
over all layers (overhead = capture extra + compression, as % of plain prefill), kept KV bytes, decode tokens/s
versus the full cache, and the bandwidth bound (weights + kept KV bytes per step over measured copy bandwidth).
Presses whose cache is a layer of their own or is rebuilt after prefill (``kv_common.HOOKED``: headwise, retro,
reform) are timed inside ``kv.prefill`` instead (overhead = prefill with the press - plain prefill) and decoded on
that cache with the press's hooks; their attention per step is not measured separately (``attn_ms`` null), and
RetroAttention's KV bytes are its full store (it keeps everything; the budget is what a step reads).

    python benchmarks/kv_speed.py --contexts 8192 32768 65536 --out $OUT/kv_speed.json
    python benchmarks/kv_speed.py --device cpu --layers 4 --hidden 512 --contexts 2048 --ratios 0.25 \
        --decode-steps 8 --out benchmarks/results_kv/kv_speed_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from kv_common import HOOKED, METHODS, ROUND2, apply, build_cache, capture_prefill, kv_bytes, make_press
from transformers import LlamaConfig, LlamaForCausalLM

from promptshrink import kv
from promptshrink.kv.pipeline import step

LLAMA3_8B = dict(
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
    num_key_value_heads=8, max_position_embeddings=131072, rope_theta=500000.0, tie_word_embeddings=False,
)  # fmt: skip


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, reps: int = 1) -> tuple[float, object]:  # noqa: ANN001
    """Median wall time (s) of ``fn`` after one warm-up, with device synchronisation."""
    out = fn()
    times = []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2], out


def copy_bandwidth(device: str) -> float | None:
    if device != "cuda":
        return None
    import triton.testing

    x = torch.empty(2 << 30, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), return_mode="median")
    return 2 * x.numel() / (ms / 1e3)


def decode_rate(model, new_cache, start: int, steps: int, press=None) -> float:  # noqa: ANN001
    """End-to-end HF decode tokens/s (cache construction excluded), best of 2 runs after a warm-up; ``new_cache()``
    gives a fresh cache per run; ``press``: decode with its hooks on (presses that act while decoding)."""
    times = []
    device = next(model.parameters()).device
    for _ in range(3):
        cache = new_cache()
        tok = torch.ones(1, 1, dtype=torch.long, device=device)
        sync()
        t = time.perf_counter()
        with kv.pipeline.decoding_hooks(model, press):
            for i in range(steps):
                tok = step(model, cache, tok, start + i)[:, -1].argmax(-1, keepdim=True)
        sync()
        times.append(time.perf_counter() - t)
    return steps / min(times[1:])


def attention_ms(layers, heads: int) -> float:  # noqa: ANN001
    """One decode step's attention over the cache, all layers (SDPA, GQA): the part that scales with kept KV."""
    q = torch.randn(1, heads, 1, layers[0][0].shape[-1], device=layers[0][0].device, dtype=layers[0][0].dtype)
    sdpa = torch.nn.functional.scaled_dot_product_attention
    run = lambda: [sdpa(q, k, v, enable_gqa=True) for k, v in layers]  # noqa: E731
    if q.is_cuda:
        import triton.testing

        return triton.testing.do_bench(run, return_mode="median")
    return 1e3 * timed(run, reps=5)[0]


def layer_bytes(cache) -> int:  # noqa: ANN001
    """KV bytes a prefilled cache holds (a RetroAttention layer: its full store)."""
    pairs = [(getattr(l, "store_keys", l.keys), getattr(l, "store_values", l.values)) for l in cache.layers]  # noqa: E741
    return kv_bytes(pairs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--contexts", type=int, nargs="+", default=[8192, 32768, 65536])
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    ap.add_argument("--methods", nargs="+", default=METHODS + ROUND2 + HOOKED)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=4096, help="hidden size (head dim stays 128, 4 query heads per KV)")
    ap.add_argument("--decode-steps", type=int, default=16)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="kv_speed.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    heads = args.hidden // 128
    shape = dict(hidden_size=args.hidden, num_attention_heads=heads, num_key_value_heads=max(1, heads // 4))
    shape["intermediate_size"] = LLAMA3_8B["intermediate_size"] * args.hidden // 4096
    cfg = LlamaConfig(**{**LLAMA3_8B, **shape, "num_hidden_layers": args.layers})
    cfg._attn_implementation = "sdpa"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(args.device):
        model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bw = copy_bandwidth(args.device)
    filters = kv.compute_qfilters(model, [torch.randint(0, cfg.vocab_size, (1, 1024))], max_queries=2048)
    rows = []
    name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    meta = dict(device=name, torch=torch.__version__, copy_bw_GBps=bw / 1e9 if bw else None, config=shape)
    meta.update(layers=args.layers, threads=torch.get_num_threads())
    print(json.dumps(meta), flush=True)
    bound = lambda kv_b: bw / (weight_bytes + kv_b) if bw else None  # noqa: E731
    for ctx in args.contexts:
        ids = torch.randint(0, cfg.vocab_size, (1, ctx), device=args.device)
        t_plain, cache = timed(lambda: kv.prefill(model, ids), reps=2)  # noqa: B023
        del cache
        if args.device == "cuda":
            torch.cuda.empty_cache()
        t_cap, captured = timed(lambda: capture_prefill(model, ids), reps=2)  # noqa: B023
        cache, cap = captured
        full = [(layer.keys, layer.values) for layer in cache.layers]
        full_bytes = kv_bytes(full)
        full_rate = decode_rate(model, lambda: build_cache(full), ctx, args.decode_steps)  # noqa: B023
        base = dict(ctx=ctx, prefill_s=t_plain, capture_s=t_cap, full_kv_GB=full_bytes / 1e9, full_tok_s=full_rate)
        base.update(full_bound_tok_s=bound(full_bytes), full_attn_ms=attention_ms(full, heads))
        print(json.dumps(base), flush=True)
        for method in args.methods:
            for ratio in args.ratios:
                press = make_press(method, ratio, filters, model)
                if method in HOOKED:
                    t_press, kept_cache = timed(lambda: kv.prefill(model, ids, press), reps=2)  # noqa: B023
                    t_comp, kept_bytes, attn = max(0.0, t_press - t_plain), layer_bytes(kept_cache), None
                    fresh = lambda: kv.prefill(model, ids, press)  # noqa: B023, E731
                    rate = decode_rate(model, fresh, ctx, args.decode_steps, press)
                    overhead = 100 * t_comp / t_plain
                    del kept_cache
                else:
                    t_comp, kept = timed(lambda: apply(press, cache, cap), reps=3)  # noqa: B023
                    kept_bytes, attn = kv_bytes(kept), attention_ms(kept, heads)
                    rate = decode_rate(model, lambda: build_cache(kept), ctx, args.decode_steps)  # noqa: B023
                    overhead = 100 * (t_comp + max(0.0, t_cap - t_plain)) / t_plain
                    del kept
                row = dict(
                    base, method=method, ratio=ratio, compress_s=t_comp, overhead_pct=overhead,
                    kv_GB=kept_bytes / 1e9, mem_saved_pct=100 * (1 - kept_bytes / full_bytes),
                    tok_s=rate, speedup=rate / full_rate, bound_tok_s=bound(kept_bytes),
                    attn_ms=attn, kv_floor_ms=1e3 * kept_bytes / bw if bw else None,
                )  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
                with open(args.out, "w") as f:
                    json.dump(dict(meta=meta, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
