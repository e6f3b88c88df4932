"""Chunk rewriting for generative compression: key-term extraction, a batched chat-LM rewriter, an extractive fallback.

The generative rewriter asks a chat model (greedy decoding) for a shorter version of each chunk; the extractive
fallback keeps the most informative phrases of a chunk by self-information. Both are measured in the target
tokenizer by the caller, which decides when a rewrite must be replaced.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .model_loading import DEFAULT_LM, LARGE_LM, load_causal_lm
from .scoring.lm import surprisal, to_units
from .segmentation import Unit, segment
from .selection import render, select_to_budget
from .target_tokenizer import TargetTokenizer

_NUMBER = re.compile(r"(?<![\w.])[-+]?\$?\d[\d,]*(?:\.\d+)?%?(?:st|nd|rd|th)?(?![\w])")
_QUOTED = re.compile(r"\"([^\"\n]{2,60})\"")
_NAME = re.compile(r"\b[A-Z][\w'-]*(?:\s+(?:of\s+|the\s+|de\s+)?[A-Z][\w'-]*)*")
_STOP_CAPS = {
    "A",
    "An",
    "And",
    "As",
    "At",
    "But",
    "For",
    "He",
    "I",
    "If",
    "In",
    "It",
    "Its",
    "My",
    "Of",
    "On",
    "Our",
    "She",
    "So",
    "That",
    "The",
    "There",
    "These",
    "They",
    "This",
    "To",
    "We",
    "What",
    "When",
    "With",
    "You",
}
PROMPT = (
    "Shorten this text to about {words} words, keeping key facts, names and numbers{keep}. "
    "Reply with the shortened text only.\n\n{text}"
)


def key_terms(text: str, limit: int = 12) -> list[str]:
    """Numbers, quoted strings and capitalised names (entities) in ``text``, in order, without duplicates."""
    found: list[tuple[int, str]] = [(m.start(), m.group()) for m in _NUMBER.finditer(text)]
    found += [(m.start(1), m.group(1)) for m in _QUOTED.finditer(text)]
    for m in _NAME.finditer(text):
        words = m.group().split()
        while words and words[0] in _STOP_CAPS:
            words.pop(0)
        if words and (len(words) > 1 or not _sentence_initial(text, m.start())):
            found.append((m.start(), " ".join(words)))
    terms: list[str] = []
    for _, term in sorted(found):
        if term not in terms and not any(term in t for t in terms):
            terms.append(term)
    return terms[:limit]


def _sentence_initial(text: str, pos: int) -> bool:
    before = text[:pos].rstrip()
    return not before or before[-1] in ".!?:\n\"'"


def missing_terms(terms: Sequence[str], text: str) -> list[str]:
    """The terms that do not occur in ``text`` (case-insensitive; thousands separators ignored)."""
    haystack = text.lower().replace(",", "")
    return [t for t in terms if t.lower().replace(",", "") not in haystack]


@dataclass(frozen=True)
class RewriteJob:
    """One chunk to rewrite: the text, the word target given to the model, and a hard cap on new LM tokens."""

    text: str
    max_words: int
    max_new_tokens: int
    terms: tuple[str, ...] = ()


class ChatRewriter:
    """Greedy batched rewriting with a chat LM (left padding, one ``generate`` call per batch)."""

    def __init__(self, model: str = LARGE_LM, batch_size: int = 4) -> None:
        self.model_name = model
        self.batch_size = batch_size

    def lm_tokens(self, texts: Sequence[str]) -> list[int]:
        _, tokenizer = load_causal_lm(self.model_name)
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]

    def prompt(self, job: RewriteJob) -> list[dict[str, str]]:
        keep = f" (in particular: {'; '.join(job.terms)})" if job.terms else ""
        return [{"role": "user", "content": PROMPT.format(words=job.max_words, keep=keep, text=job.text)}]

    def rewrite(
        self, jobs: Sequence[RewriteJob], seed: int = 0, progress: Callable[[int, int], None] | None = None
    ) -> tuple[list[str], int]:
        """The rewrites (in job order) and the number of tokens generated; ``progress`` after each batch."""
        import torch

        model, tokenizer = load_causal_lm(self.model_name)
        torch.manual_seed(seed)
        order = sorted(range(len(jobs)), key=lambda i: (jobs[i].max_new_tokens, i))
        out = [""] * len(jobs)
        generated = 0
        for b in range(0, len(order), self.batch_size):
            batch = [jobs[i] for i in order[b : b + self.batch_size]]
            prompts = [
                tokenizer.apply_chat_template(self.prompt(j), tokenize=False, add_generation_prompt=True) for j in batch
            ]
            enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
            enc = enc.to(model.device)
            with torch.inference_mode():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max(j.max_new_tokens for j in batch),
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                )
            new = ids[:, enc["input_ids"].shape[1] :]
            for k, job in enumerate(batch):
                row = new[k, : job.max_new_tokens].tolist()
                generated += len(row)
                out[order[b + k]] = _clean(tokenizer.decode(row, skip_special_tokens=True))
            if progress:
                progress(min(b + self.batch_size, len(order)), len(order))
        return out, generated


def _clean(text: str) -> str:
    text = re.sub(r"^\s*(?:rewritten passage|passage|here is[^:\n]*):\s*", "", text.strip(), flags=re.IGNORECASE)
    return " ".join(text.split())


def extractive_compress(
    text: str,
    limit: int,
    tokenizer: TargetTokenizer,
    terms: Sequence[str] = (),
    model: str = DEFAULT_LM,
) -> str:
    """Keep the most informative phrases of ``text`` (default-LM self-information) within ``limit`` target tokens.

    Phrases holding a key term are preferred; the kept phrases stay in their original order.
    """
    if limit <= 0 or not text.strip():
        return ""
    units = [Unit(u.text, u.start, u.end) for u in segment(text, "phrase")]
    info = to_units(surprisal(text, model), units, "mean")
    bonus = np.asarray([sum(t.lower() in u.text.lower() for t in terms) for u in units], dtype=float)
    scores = info + bonus * (float(np.max(np.abs(info), initial=1.0)) + 1.0)
    keep = select_to_budget(units, scores, limit, tokenizer)
    return render(units, keep).strip()


def fit_words(text: str, limit: int, tokenizer: TargetTokenizer) -> str:
    """The longest word prefix of ``text`` within ``limit`` target tokens (ends at a sentence end when possible)."""
    words = text.split()
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if tokenizer.count(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    cut = " ".join(words[:lo])
    end = max(cut.rfind(". "), cut.rfind("! "), cut.rfind("? "))
    if cut and not cut.endswith((".", "!", "?")) and end > len(cut) // 2:
        cut = cut[: end + 1]
    return cut


def max_new_tokens(limit: int, lm_count: int, target_count: int) -> int:
    """LM-token cap for a rewrite of ``limit`` target tokens, from the chunk's LM/target token ratio."""
    return max(4, math.ceil(limit * lm_count / max(1, target_count)) + 2)
