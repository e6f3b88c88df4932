"""Check the Triton KV kernels against the PyTorch references (fresh random inputs) and time both (do_bench medians).

python benchmarks/kv_kernels.py --out $OUT/kv_kernels.json
"""

from __future__ import annotations

import argparse
import json

import torch
import triton.testing

from promptshrink.kv import dispatch as K


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm().clamp_min(1e-30))


def bench(fn) -> float:  # noqa: ANN001
    return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", type=int, nargs="+", default=[8192, 32768, 65536])
    ap.add_argument("--out", default="kv_kernels.json")
    args = ap.parse_args()
    rows = []
    tri_chunk, tri_qf = K.triton_module("chunk_select"), K.triton_module("qfilter_score")
    assert tri_chunk is not None and tri_qf is not None, "Triton kernels need CUDA and triton"
    for seq in args.seqs:
        for trial in range(3):  # fresh inputs each time
            keys = torch.randn(1, 8, seq + trial, 128, device="cuda", dtype=torch.bfloat16)
            values = torch.randn_like(keys)
            scores = torch.rand(1, seq + trial, device="cuda")
            filt = torch.randn(8, 128, device="cuda")
            k_chunks = (seq // 10) // 4
            ko, vo, ids = tri_chunk.chunk_select(scores, keys, values, 10, k_chunks)
            rk, rv, rids = K.chunk_select_reference(scores, keys, values, 10, k_chunks)
            ids_match = bool(torch.equal(ids.long(), rids.long()))
            err_chunk = max(rel_err(ko, rk), rel_err(vo, rv))
            qs = tri_qf.qfilter_scores(keys, filt)
            err_qf = rel_err(qs, torch.einsum("bhsd,hd->bhs", keys.double(), filt.double()))
        row = dict(
            seq=seq, chunk_ids_match=ids_match, chunk_rel_err=err_chunk, qfilter_rel_err=err_qf,
            chunk_triton_ms=bench(lambda: tri_chunk.chunk_select(scores, keys, values, 10, k_chunks)),  # noqa: B023
            chunk_torch_ms=bench(lambda: K.chunk_select_reference(scores, keys, values, 10, k_chunks)),  # noqa: B023
            qfilter_triton_ms=bench(lambda: tri_qf.qfilter_scores(keys, filt)),  # noqa: B023
            qfilter_torch_ms=bench(lambda: K.qfilter_scores_reference(keys, filt)),  # noqa: B023
            kv_read_MB=keys.numel() * 2 * 2 / 1e6,
        )  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
