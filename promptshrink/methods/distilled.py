"""Distilled fast compressor: a keep/drop token classifier on the bundled MiniLM, LLMLingua-2 style.

Pan et al., "LLMLingua-2: Data Distillation for Efficient and Faithful Task-Agnostic Prompt Compression",
Findings of ACL 2024: a small bidirectional encoder labels each word keep/drop, trained on labels distilled
from a stronger compressor; long input is classified in encoder-sized chunks; the budget is met by keeping
the words with the highest keep probability. Here the teacher is `selective_context` (with the question when
one is given), the encoder is all-MiniLM-L6-v2 (`embedder`, frozen) and the shipped part is a small head over
three of its layers (`models/distilled/`, sha256 in `models/manifest.json`; trained by `training/`). With a
question the encoder reads it with each chunk, cross-encoder style (``[CLS] question [SEP] chunk [SEP]``), and
the head also sees each token's closeness to the question; because the teacher's question effect is too weak to
distil (benchmarks/README.md), a coarse question-aware step is added as LLMLingua-2 does with LongLLMLingua's:
each token's score is raised by the question relevance of its sentence (Jiang et al., "LongLLMLingua", ACL 2024).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..model_loading import DEFAULT_EMBEDDER, lm_stack, load_artefact, load_encoder
from ..params import non_empty, number
from ..registry import register
from ..scoring.embeddings import embed
from ..scoring.lm import TokenScores, owners, to_units
from ..segmentation import Unit, segment
from .base import CompressionRequest, ExtractiveCompressor

HEAD = "distilled-head"
POSITIONS = 512  # the encoder's position limit: [CLS] (question [SEP]) chunk [SEP]
QUESTION_FEATURES = 3  # closeness to the question, token also in the question, a question was given


@lru_cache(maxsize=2)
def load_head(name: str = HEAD) -> tuple[Any, dict[str, Any]]:
    """The classifier head (a torch module in eval mode) and its metadata, checked by sha256."""
    torch, _ = lm_stack()
    from safetensors.torch import load_file

    path, meta = load_artefact(name)
    weights = load_file(str(path))
    head = keep_head(int(meta["input_dim"]), int(meta["hidden"]))
    head.load_state_dict({k: v.float() for k, v in weights.items()})
    return head.eval(), meta


def keep_head(input_dim: int, hidden: int) -> Any:
    """Feature vector of one encoder token -> keep logit (the architecture the training script fits)."""
    torch, _ = lm_stack()
    return torch.nn.Sequential(torch.nn.Linear(input_dim, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))


def encoder_features(encoder: Any, input_ids: Any, layers: Sequence[int]) -> tuple[Any, Any]:
    """(concatenated hidden states of ``layers``, last hidden state) for a batch of token ids as given."""
    torch, _ = lm_stack()
    with torch.inference_mode():
        out = encoder(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), output_hidden_states=True)
    return torch.cat([out.hidden_states[k] for k in layers], dim=-1), out.hidden_states[-1]


def chunks(offsets: np.ndarray, words: Sequence[Unit], size: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of at most ``size`` tokens that never split a word (a longer word is cut)."""
    starts = np.asarray([w.start for w in words]) if words else np.zeros(0, dtype=int)
    owner = np.searchsorted(starts, offsets[:, 0], side="right") - 1 if len(starts) else np.zeros(len(offsets))
    out, begin = [], 0
    while begin < len(offsets):
        end = min(begin + size, len(offsets))
        if end < len(offsets):
            cut = end
            while cut > begin + 1 and owner[cut] == owner[cut - 1]:
                cut -= 1
            end = cut if cut > begin + 1 else end
        out.append((begin, end))
        begin = end
    return out


def token_features(
    text: str, question: str | None, meta: dict[str, Any], encoder: str = DEFAULT_EMBEDDER
) -> tuple[Any, np.ndarray]:
    """(head input per encoder token of ``text``, token character offsets); the training script uses it too.

    Each chunk of the text is encoded after the question (at most ``meta["question_tokens"]`` of its tokens);
    a token's features are its hidden states at ``meta["layers"]`` then `QUESTION_FEATURES` numbers: the
    largest cosine similarity of its last hidden state to a question token's, whether its id occurs in the
    question, and 1 (all three are 0 without a question).
    """
    torch, _ = lm_stack()
    model, tokenizer = load_encoder(encoder)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
    ids = list(enc["input_ids"])
    q_ids = tokenizer(question, add_special_tokens=False)["input_ids"] if question and question.strip() else []
    q_ids = q_ids[: int(meta["question_tokens"])]
    head_ids = [tokenizer.cls_token_id, *q_ids, tokenizer.sep_token_id] if q_ids else [tokenizer.cls_token_id]
    room = min(int(meta["chunk_tokens"]), POSITIONS - len(head_ids) - 1)
    in_question = torch.tensor(np.isin(ids, q_ids), dtype=torch.float32)
    parts = []
    for begin, end in chunks(offsets, segment(text, "word"), room):
        batch = torch.tensor([[*head_ids, *ids[begin:end], tokenizer.sep_token_id]], device=model.device)
        feats, last = encoder_features(model, batch, meta["layers"])
        feats, last = feats[0].float().cpu(), last[0].float().cpu()
        body = slice(len(head_ids), len(head_ids) + end - begin)
        extra = torch.zeros(end - begin, QUESTION_FEATURES)
        if q_ids:
            unit = torch.nn.functional.normalize(last, dim=-1)
            extra[:, 0] = (unit[body] @ unit[1 : 1 + len(q_ids)].T).max(dim=1).values
            extra[:, 1] = in_question[begin:end]
            extra[:, 2] = 1.0
        parts.append(torch.cat([feats[body], extra], dim=-1))
    empty = torch.zeros(0, len(meta["layers"]) * model.config.hidden_size + QUESTION_FEATURES)
    return (torch.cat(parts) if parts else empty), offsets


def sentence_relevance(text: str, question: str, offsets: np.ndarray, encoder: str = DEFAULT_EMBEDDER) -> np.ndarray:
    """Per token (by its first character): the question relevance of its sentence, the cosine of their mean-pooled
    ``encoder`` embeddings min-max scaled over the text's sentences to [0, 1] (all 0 for fewer than two sentences
    or equal relevance)."""
    sentences = segment(text, "sentence")
    if len(sentences) < 2 or not len(offsets):
        return np.zeros(len(offsets))
    vectors = embed([question, *(s.text for s in sentences)], encoder)
    sims = vectors[1:] @ vectors[0]
    spread = float(sims.max() - sims.min())
    scaled = (sims - sims.min()) / spread if spread > 1e-6 else np.zeros(len(sims))
    return scaled[owners([s.start for s in sentences], offsets)]


@register
@dataclass
class DistilledCompressor(ExtractiveCompressor):
    """Keep probability per MiniLM token from a head trained on `selective_context` labels; mean per unit.

    Words are the default unit (the labels are word-level); input longer than the encoder's 512 positions is
    classified in chunks cut at word boundaries. A question, when given, is read with every chunk (the head is
    trained on the teacher's question-aware labels, but learnt no measurable question effect: see
    benchmarks/README.md), and each token's keep probability is raised by ``question_weight`` x its sentence's
    question relevance (`sentence_relevance`, the coarse step of LongLLMLingua); without one the head scores the
    text alone.
    References: Pan et al., "LLMLingua-2: Data Distillation for Efficient and Faithful Task-Agnostic Prompt
    Compression", Findings of ACL 2024; Jiang et al., "LongLLMLingua", ACL 2024.

    Args:
        encoder: The frozen encoder the head reads (a bundled alias such as ``embedder``, or a model name).
        head: The trained head, by its name under ``artefacts`` in ``models/manifest.json``.
        question_weight: With a question, the weight of the sentence relevance (0-1) added to each token's keep
            probability (0-1); 0 leaves the head alone.
    """

    name = "distilled"
    summary = (
        "LLMLingua-2-style keep/drop classifier on MiniLM distilled from selective_context, plus the question "
        "relevance of each sentence when asked; fast, no LM."
    )
    uses_question = True
    default_unit = "word"

    encoder: str = DEFAULT_EMBEDDER
    head: str = HEAD
    question_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        non_empty("encoder", self.encoder)
        non_empty("head", self.head)
        number("question_weight", self.question_weight, 0.0)

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        return to_units(self.token_scores(request.text, request.question), units, "mean")

    def token_scores(self, text: str, question: str | None = None) -> TokenScores:
        """Keep score of every encoder token of ``text`` with its character offsets: the head's probability, plus
        ``question_weight`` x its sentence's relevance when ``question`` is given."""
        torch, _ = lm_stack()
        head, meta = load_head(self.head)
        feats, offsets = token_features(text, question, meta, self.encoder)
        with torch.inference_mode():
            values = torch.sigmoid(head(feats)).squeeze(-1).numpy() if len(feats) else np.zeros(0)
        values = values.astype(np.float64)
        if question and question.strip() and self.question_weight:
            values += self.question_weight * sentence_relevance(text, question, offsets, self.encoder)
        return TokenScores(offsets, values)
