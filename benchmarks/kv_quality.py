"""KV press quality on a small real model: passkey (needle) retrieval in both modes, logit KL / perplexity.

The haystack is the 1986 State of the Union address (tests/data/article.txt, public domain). Q-Filters are
calibrated on the same text's first half and saved under models/<model>/qfilters.safetensors.

Needle retrieval is measured in two modes (see ``promptshrink.kv.generate``): query-agnostic (the context alone is
compressed, the question is fed afterwards) and question-aware (context + question prefilled, the question's queries
are the observation window and its entries stay). KL and perplexity of a 64-token continuation of the context are
query-agnostic by nature (there is no question), measured on the first ``--kl-samples`` samples.

    python benchmarks/kv_quality.py --model default-lm --ctx 768 --samples 20 --out results_kv/kv_quality.json
    python benchmarks/kv_quality.py --gguf <dir> <file.gguf> --model-key HuggingFaceTB__SmolLM2-135M-Instruct
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from kv_common import METHODS, Capture, apply, build_cache, capture_prefill, make_press

from promptshrink import kv
from promptshrink.kv.pipeline import decode, forward_tokens, greedy, prefill_logits

TEXT = (Path(__file__).resolve().parents[1] / "tests" / "data" / "article.txt").read_text()
QUESTION = "\nWhat is the secret passkey? The secret passkey is"
ANSWER_TOKENS = 6  # ' ' + five digits


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

    model, tok = load_causal_lm(args.model, device=args.device)
    return model, tok, model_key(args.model)


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default-lm")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--gguf", nargs=2, metavar=("DIR", "FILE"))
    ap.add_argument("--model-key", default="")
    ap.add_argument("--ctx", type=int, default=768)
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--kl-samples", type=int, default=4)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.25])
    ap.add_argument("--out", default="kv_quality.json")
    args = ap.parse_args()
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model, tok, key = load(args)
    dev = next(model.parameters()).device
    ids = tok(TEXT, return_tensors="pt").input_ids.to(dev)
    filters = kv.compute_qfilters(model, [ids[:, : len(ids[0]) // 2][:, :1024]])
    kv.save_qfilters(filters, key)
    rng = random.Random(0)
    hay = ids[0, len(ids[0]) // 2 :]
    question = tok(QUESTION, add_special_tokens=False, return_tensors="pt").input_ids[0].to(dev)
    nq, n_kl = len(question), min(args.kl_samples, args.samples)
    configs = [("full", 1.0)] + [(m, r) for m in METHODS for r in args.ratios]
    stats = {c: {"needle_agnostic": 0.0, "needle_question": 0.0, "kl": 0.0, "nll": 0.0} for c in configs}
    for s in range(args.samples):
        code = str(rng.randint(10000, 99999))
        needle = tok(f" The secret passkey is {code}. Remember it. ", add_special_tokens=False, return_tensors="pt")
        start = rng.randint(0, len(hay) - args.ctx - 80)
        body = hay[start : start + args.ctx]
        at = int(len(body) * (s + 0.5) / args.samples)  # needle depths spread evenly over the context
        context = torch.cat([body[:at], needle.input_ids[0].to(dev), body[at:]])[None]
        cont = hay[start + args.ctx : start + args.ctx + 64][None]
        n = context.shape[1]
        cache, cap = capture_prefill(model, context)
        full = [(layer.keys, layer.values) for layer in cache.layers]
        prompt = torch.cat([context, question[None]], dim=1)
        qa_cap = Capture(ratio=1.0, window=nq)  # question-aware: the captured window is the question
        qa_cache, qa_logits = prefill_logits(model, prompt, qa_cap)
        qa_full = [(layer.keys, layer.values) for layer in qa_cache.layers]
        ref = forward_tokens(model, build_cache(full), cont, n).float().log_softmax(-1) if s < n_kl else None
        for name, ratio in configs:
            row = stats[(name, ratio)]
            press = None if name == "full" else make_press(name, ratio, filters)
            kept = full if press is None else apply(press, cache, cap)
            answer = tok.decode(decode(model, build_cache(kept), question[None], n, ANSWER_TOKENS))
            row["needle_agnostic"] += (code in answer) / args.samples
            qa_kept = qa_full if press is None else apply(press, qa_cache, qa_cap, nq)
            answer = tok.decode(greedy(model, build_cache(qa_kept), qa_logits, prompt.shape[1], ANSWER_TOKENS))
            row["needle_question"] += (code in answer) / args.samples
            if ref is not None:
                logits = forward_tokens(model, build_cache(kept), cont, n).float().log_softmax(-1)
                row["kl"] += float((ref.exp() * (ref - logits)).sum(-1).mean()) / n_kl
                row["nll"] += float(-logits[0, :-1].gather(-1, cont[0, 1:, None]).mean()) / n_kl
        print(f"sample {s + 1}/{args.samples} done at {time.perf_counter() - t0:.0f} s", flush=True)
    out = [dict(method=m, ratio=r, **v, ppl=float(torch.tensor(v["nll"]).exp())) for (m, r), v in stats.items()]
    for row in out:
        print(json.dumps(row), flush=True)
    meta = dict(model=key, ctx=args.ctx, samples=args.samples, kl_samples=n_kl, device=str(dev))
    meta["seconds"] = round(time.perf_counter() - t0)
    Path(args.out).write_text(json.dumps(dict(**meta, rows=out), indent=1))


if __name__ == "__main__":
    main()
