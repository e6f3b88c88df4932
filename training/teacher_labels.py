"""Word-level teacher labels for the distilled compressor: `python -m training.teacher_labels --passages 800`.

The teacher is `selective_context` without a question (the question-agnostic LM-scored method with the best
answer retention and reader likelihood in the quick suite): each word's score is its summed self-information
under the bundled SmolLM2-135M. The label is the word's rank percentile within its passage (0 = least
informative, 1 = most), so one teacher pass gives the keep/drop decision at every rate: keeping the top
fraction r of words by label is the teacher's choice at rate r (up to the teacher's token-mass threshold).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from promptshrink.model_loading import DEFAULT_LM
from promptshrink.scoring.lm import surprisal, to_units
from promptshrink.segmentation import segment

from .corpus import training_passages

OUT = Path(__file__).parent / "data" / "teacher_labels.jsonl"


def word_labels(text: str) -> tuple[list[tuple[int, int]], list[float]]:
    """Word spans of ``text`` and their teacher rank percentiles."""
    words = segment(text, "word")
    scores = to_units(surprisal(text, DEFAULT_LM), words, "sum")
    ranks = np.argsort(np.argsort(scores, kind="stable"), kind="stable")
    labels = ranks / max(1, len(words) - 1)
    return [(w.start, w.end) for w in words], [round(float(x), 4) for x in labels]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--passages", type=int, default=800)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    passages = training_passages(args.passages)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(args.out, "w", encoding="utf-8") as f:
        for k, text in enumerate(passages):
            spans, labels = word_labels(text)
            f.write(json.dumps({"text": text, "words": spans, "labels": labels}) + "\n")
            if k % 50 == 0:
                print(f"{k}/{len(passages)} {time.perf_counter() - start:.0f}s", flush=True)
    print(f"wrote {len(passages)} passages to {args.out} in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
