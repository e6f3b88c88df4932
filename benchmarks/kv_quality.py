"""KV press quality on a small real model: passkey (needle) retrieval and logit KL / perplexity versus the full cache.

The haystack is the 1986 State of the Union address (tests/data/article.txt, public domain). Q-Filters are
calibrated on the same text's first half and saved under models/<model>/qfilters.safetensors.

    python benchmarks/kv_quality.py --model default-lm --out benchmarks/results_kv/kv_quality.json
    python benchmarks/kv_quality.py --gguf <dir> <file.gguf> --model-key HuggingFaceTB__SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch
from kv_common import METHODS, apply, build_cache, capture_prefill, make_press

from promptshrink import kv
from promptshrink.kv.pipeline import decode, step

TEXT = (Path(__file__).resolve().parents[1] / "tests" / "data" / "article.txt").read_text()


def load(args: argparse.Namespace):  # noqa: ANN201
    if args.gguf:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        d, f = args.gguf
        return (
            AutoModelForCausalLM.from_pretrained(d, gguf_file=f).eval(),
            AutoTokenizer.from_pretrained(d, gguf_file=f),
            args.model_key,
        )
    from promptshrink.model_loading import load_causal_lm, model_key

    model, tok = load_causal_lm(args.model)
    return model, tok, model_key(args.model)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default-lm")
    ap.add_argument("--gguf", nargs=2, metavar=("DIR", "FILE"))
    ap.add_argument("--model-key", default="")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--samples", type=int, default=6)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    ap.add_argument("--out", default="kv_quality.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    model, tok, key = load(args)
    ids = tok(TEXT, return_tensors="pt").input_ids
    filters = kv.compute_qfilters(model, [ids[:, : len(ids[0]) // 2][:, :1024]])
    kv.save_qfilters(filters, key)
    rng = random.Random(0)
    hay = ids[0, len(ids[0]) // 2 :]
    question = tok("\nWhat is the secret passkey? The secret passkey is", return_tensors="pt").input_ids[0]
    stats: dict[tuple[str, float], dict[str, float]] = {}
    for s in range(args.samples):
        code = str(rng.randint(10000, 99999))
        needle = tok(f" The secret passkey is {code}. Remember it. ", return_tensors="pt").input_ids[0]
        start = rng.randint(0, len(hay) - args.ctx - 80)
        body = hay[start : start + args.ctx]
        at = int(len(body) * (s + 0.5) / args.samples)
        context = torch.cat([body[:at], needle, body[at:]])[None]
        cont = hay[start + args.ctx : start + args.ctx + 64][None]
        n = context.shape[1]
        cache, cap = capture_prefill(model, context)
        full_layers = [(layer.keys, layer.values) for layer in cache.layers]
        ref_logits = step(model, build_cache(full_layers), cont, n).float().log_softmax(-1)
        configs = [("full", 1.0)] + [(m, r) for m in METHODS for r in args.ratios]
        for name, ratio in configs:
            kept = full_layers if name == "full" else apply(make_press(name, ratio, filters), cache, cap)
            logits = step(model, build_cache(kept), cont, n).float().log_softmax(-1)
            kl = float((ref_logits.exp() * (ref_logits - logits)).sum(-1).mean())
            nll = float(-logits[0, :-1].gather(-1, cont[0, 1:, None]).mean())
            answer = tok.decode(decode(model, build_cache(kept), question[None], n, 8))
            row = stats.setdefault((name, ratio), {"needle": 0.0, "kl": 0.0, "nll": 0.0})
            row["needle"] += (code in answer) / args.samples
            row["kl"] += kl / args.samples
            row["nll"] += nll / args.samples
    out = [dict(method=m, ratio=r, **v, ppl=float(torch.tensor(v["nll"]).exp())) for (m, r), v in stats.items()]
    for row in out:
        print(json.dumps(row), flush=True)
    Path(args.out).write_text(json.dumps(dict(model=key, ctx=args.ctx, samples=args.samples, rows=out), indent=1))


if __name__ == "__main__":
    main()
