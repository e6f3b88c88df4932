"""log P(target) per row of an LM head's logits: one pass over the bf16/fp16 logits, fp32 arithmetic.

The PyTorch reference (``log_softmax(logits, dtype=float32).gather``) writes an fp32 copy of the logits and reads
it again; this kernel reads each logit once (online max and sum of exponentials), so a [rows, vocab] block costs
rows x vocab x 2 bytes of reads instead of about five times that.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _logprob_kernel(x_ptr, t_ptr, o_ptr, vocab, stride, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * stride
    cols = tl.arange(0, BLOCK)
    top = tl.full([BLOCK], float("-inf"), tl.float32)
    total = tl.zeros([BLOCK], tl.float32)
    for start in range(0, vocab, BLOCK):
        x = tl.load(base + start + cols, mask=start + cols < vocab, other=float("-inf")).to(tl.float32)
        new_top = tl.maximum(top, x)
        scale = tl.where(new_top == float("-inf"), 0.0, tl.exp(top - new_top))
        total = total * scale + tl.where(x == float("-inf"), 0.0, tl.exp(x - new_top))
        top = new_top
    peak = tl.max(top, axis=0)
    lse = peak + tl.log(tl.sum(total * tl.exp(top - peak), axis=0))
    target = tl.load(base + tl.load(t_ptr + row)).to(tl.float32)
    tl.store(o_ptr + row, target - lse)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[r, targets[r]] in fp32 for logits [rows, vocab] (any float dtype) and int targets."""
    rows, vocab = logits.shape
    logits = logits if logits.stride(-1) == 1 else logits.contiguous()
    out = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows:
        _logprob_kernel[(rows,)](logits, targets.contiguous(), out, vocab, logits.stride(0), BLOCK=2048, num_warps=8)
    return out
