"""Word-level teacher labels for the distilled compressor: `python -m training.teacher_labels --seed 0`.

The teacher is the real `selective_context` (word units, bundled SmolLM2-135M): a word's score is its summed
self-information, plus, when a question is given, how much the question lowers it (the method's
question-conditioned pass). Each passage of `training.corpus` is labelled once without a question and once per
question; the label is the word's rank percentile within its passage (0 = least worth keeping, 1 = most), so one
teacher pass gives the keep/drop decision at every rate: keeping the top fraction r of words by label is the
teacher's choice at rate r (up to the teacher's token-mass threshold). Passages go through the teacher in
batches (`score_many`: all their LM windows packed together).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from promptshrink.api import build_request, get_compressor
from promptshrink.segmentation import segment

from .corpus import Passage, training_passages

OUT = Path(__file__).parent / "data" / "teacher_labels.jsonl"


def rank_percentiles(scores: np.ndarray) -> list[float]:
    """0 for the lowest score, 1 for the highest (ties in text order)."""
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    return [round(float(x), 4) for x in ranks / max(1, len(scores) - 1)]


def label_batch(passages: list[Passage]) -> list[dict[str, object]]:
    """One row per (passage, question or None): source, text, question, word spans, teacher rank percentiles."""
    teacher = get_compressor("selective_context", unit="word")
    asks = [(p, q) for p in passages for q in (None, *p.questions)]
    requests = [build_request(p.text, rate=0.5, question=q) for p, q in asks]
    units = [segment(p.text, "word") for p, _ in asks]
    rows = []
    for (p, q), u, s in zip(asks, units, teacher.score_many(requests, units)):
        spans = [(w.start, w.end) for w in u]
        labels = rank_percentiles(np.asarray(s, dtype=float))
        rows.append({"source": p.source, "text": p.text, "question": q, "words": spans, "labels": labels})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0, help="seed of the passage sample")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each source's share to label")
    parser.add_argument("--limit", type=int, default=None, help="label only the first N passages of that order")
    parser.add_argument("--batch", type=int, default=16, help="passages per teacher batch")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    passages = training_passages(args.seed, args.scale)[: args.limit]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start, rows = time.perf_counter(), 0
    with open(args.out, "w", encoding="utf-8") as f:
        for k in range(0, len(passages), args.batch):
            for row in label_batch(passages[k : k + args.batch]):
                f.write(json.dumps(row) + "\n")
                rows += 1
            f.flush()
            done = min(k + args.batch, len(passages))
            print(f"{done}/{len(passages)} passages, {rows} rows, {time.perf_counter() - start:.0f}s", flush=True)
    print(f"wrote {rows} rows ({len(passages)} passages) to {args.out} in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
