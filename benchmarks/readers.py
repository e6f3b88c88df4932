"""Readers that judge a (compressed) context: the bundled LM's answer log-likelihood, optional generative readers."""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PROMPT = "{context}\n\nQuestion: {question}\nAnswer:"
INSTRUCTION = "Answer the question from the context with a short phrase copied from it. Reply with the answer only."
# Per task: system instruction, user prompt and new-token cap. Every answer is the first non-blank line of the
# output: a short span (qa, multidoc, needle), a number (gsm: the 0.5B reader got 0/6 full-context gsm items
# right both ways, with 256 tokens of worked solution or with the number alone, so the cheap form is used), one
# sentence (summary).
TASK_PROMPTS: dict[str, tuple[str, str, int]] = {
    "qa": (INSTRUCTION, PROMPT, 12),
    "multidoc": (INSTRUCTION, PROMPT, 12),
    "needle": (INSTRUCTION, PROMPT, 12),
    "gsm": (
        "Solve the last problem like the solved examples. Reply with its final answer only, as '#### <number>'.",
        PROMPT,
        16,
    ),
    "summary": ("Summarise the article in one sentence.", "{context}", 40),
    "narrative": (
        "Answer the question about the story from the context with a short phrase. Reply with the answer only.",
        PROMPT,
        16,
    ),
    "korean": (INSTRUCTION, PROMPT, 12),
}


class LikelihoodReader:
    """Mean per-token negative log-likelihood (nats) of the gold continuation given context + question."""

    def __init__(self, model: str = "default-lm", max_tokens: int = 4096) -> None:
        from promptshrink.model_loading import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(model)
        self.max_tokens = max_tokens
        self._cache: dict[tuple[str, str, str], float] = {}

    def nll(self, context: str, question: str, reference: str) -> float:
        key = (context, question, reference)
        if key not in self._cache:
            self._cache[key] = self._nll(*key)
        return self._cache[key]

    def _nll(self, context: str, question: str, reference: str) -> float:
        import torch

        prompt = self.tokenizer(PROMPT.format(context=context, question=question), add_special_tokens=False)
        answer = self.tokenizer(" " + reference.strip(), add_special_tokens=False)["input_ids"]
        answer = answer[: self.max_tokens // 4]
        ids = (prompt["input_ids"] + answer)[-self.max_tokens :]
        with torch.inference_mode():
            logits = self.model(input_ids=torch.tensor([ids]), logits_to_keep=len(answer) + 1).logits[0, :-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        picked = logp.gather(1, torch.tensor(answer).unsqueeze(1))
        return float(-picked.mean())


class GenerativeReader:
    """Greedy short answers from the bundled instruct LM (slow on CPU: use on a tiny sample)."""

    def __init__(self, model: str = "large-lm", max_new_tokens: int = 16) -> None:
        from promptshrink.model_loading import load_causal_lm

        self.model, self.tokenizer = load_causal_lm(model)
        self.max_new_tokens = max_new_tokens
        self.name = model

    def answer(self, context: str, question: str) -> str:
        import torch

        messages = [
            {"role": "system", "content": INSTRUCTION},
            {"role": "user", "content": PROMPT.format(context=context, question=question)},
        ]
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, torch.Tensor):
            ids = ids["input_ids"]
        with torch.inference_mode():
            out = self.model.generate(ids, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip().split("\n")[0]


class FirstLineDone:
    """Per-row stopping rule for batched greedy generation: a row is done once its new text has a complete first
    non-blank line (the answer; nothing after it is read)."""

    def __init__(self, tokenizer: Any, prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.prompt_len = prompt_len

    @staticmethod
    def done(text: str) -> bool:
        return "\n" in text.lstrip()

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_len :], skip_special_tokens=True)
        return torch.tensor([self.done(t) for t in texts], dtype=torch.bool, device=input_ids.device)


def plan_batches(lengths: Sequence[int], batch_size: int, max_tokens: int, row_padding: float) -> list[list[int]]:
    """Indices of prompts grouped into batches, shortest first: at most ``batch_size`` rows and ``max_tokens``
    padded tokens, and at most ``row_padding`` padding tokens per row beyond the first (a lone prompt always
    runs). A row earns its padding by sharing the decode steps: on CPU the prompt pass costs time per token,
    padded or not, while a decode step of 8 rows costs little more than one of a single row."""
    batches: list[list[int]] = []
    batch: list[int] = []
    real = 0
    for index in sorted(range(len(lengths)), key=lambda k: lengths[k]):
        padded = lengths[index] * (len(batch) + 1)
        fits = padded <= max_tokens and padded - real - lengths[index] <= row_padding * len(batch)
        if batch and (len(batch) == batch_size or not fits):
            batches.append(batch)
            batch, real = [], 0
        batch.append(index)
        real += lengths[index]
    return batches + [batch] if batch else batches


class CachedChatReader:
    """Greedy chat-template answers from the bundled instruct LM, batched, cached on disk by prompt hash.

    One prompt per task (`TASK_PROMPTS`); the cache (one JSON line per generation, keyed by the sha256 of the
    model, messages and token cap) makes re-runs and interrupted runs cheap. Uncached prompts are generated
    grouped by token cap and sorted by length, in left-padded batches with an attention mask (greedy answers
    equal one-by-one generation: tested) planned by `plan_batches`, a row adding at most ``step_tokens`` x cap / 2
    padding tokens (measured on this CPU, one thread: a decode step of 8 rows costs the compute of 32 prompt
    tokens, of 1 row 14, so an extra row saves about 10 a step; answers use about half their cap). Each row
    stops once its answer line is complete (`FirstLineDone`) or at EOS, with the KV cache on. The dtype is the
    library's (`default_dtype`: bf16 on CPUs with fast bf16, else fp32).
    """

    def __init__(
        self,
        cache: Path,
        model: str = "large-lm",
        batch_size: int = 8,
        max_batch_tokens: int = 8192,
        step_tokens: float = 10.0,
    ) -> None:
        self.model_name = model
        self.cache_path = cache
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.step_tokens = step_tokens
        self._cache: dict[str, str] = {}
        if cache.is_file():
            for line in cache.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._cache[entry["key"]] = entry["output"]
        self._model: Any = None
        self.generated = 0  # prompts that missed the cache
        self.generation_s = 0.0  # wall time spent generating them

    def messages(self, task: str, context: str, question: str) -> tuple[list[dict[str, str]], int]:
        system, template, cap = TASK_PROMPTS[task]
        user = template.format(context=context, question=question)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}], cap

    def key(self, messages: list[dict[str, str]], cap: int) -> str:
        blob = json.dumps([self.model_name, messages, cap], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def answer(self, task: str, context: str, question: str) -> str:
        return self.answer_many([(task, context, question)])[0]

    def cached(self, task: str, context: str, question: str) -> str | None:
        """The cached answer to this request, or None (nothing is generated)."""
        output = self._cache.get(self.key(*self.messages(task, context, question)))
        return None if output is None else self.extract(output)

    def answer_many(self, requests: Sequence[tuple[str, str, str]]) -> list[str]:
        """Answers to (task, context, question) requests, in order; uncached prompts are generated in batches."""
        keys = []
        pending: dict[int, dict[str, list[dict[str, str]]]] = defaultdict(dict)
        for task, context, question in requests:
            messages, cap = self.messages(task, context, question)
            keys.append(self.key(messages, cap))
            if keys[-1] not in self._cache:
                pending[cap][keys[-1]] = messages
        for cap, group in pending.items():
            self._generate_group(group, cap)
        return [self.extract(self._cache[key]) for key in keys]

    @staticmethod
    def extract(output: str) -> str:
        """The answer: the first non-blank line of a generation."""
        return output.strip().split("\n")[0].strip()

    def _generate_group(self, group: dict[str, list[dict[str, str]]], cap: int) -> None:
        """Generate every prompt of one token cap in `plan_batches` order, appending each batch to the cache file."""
        began = time.perf_counter()
        _, tokenizer = self.load()
        loaded = time.perf_counter()
        keys = list(group)
        encoded = {key: self.encode(tokenizer, group[key]) for key in keys}
        print(
            f"  reader: model ready in {loaded - began:.1f}s, {len(keys)} prompts encoded in "
            f"{time.perf_counter() - loaded:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        lengths = [len(encoded[k]) for k in keys]
        for rows in plan_batches(lengths, self.batch_size, self.max_batch_tokens, self.step_tokens * cap / 2):
            self._run_batch([keys[r] for r in rows], encoded, cap)

    def _run_batch(self, keys: list[str], encoded: dict[str, list[int]], cap: int) -> None:
        start = time.perf_counter()
        outputs = self.generate([encoded[k] for k in keys], cap)
        self.generation_s += time.perf_counter() - start
        self.generated += len(keys)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.cache_path, "a", encoding="utf-8") as f:
            for key, output in zip(keys, outputs):
                self._cache[key] = output
                f.write(json.dumps({"key": key, "output": output}, ensure_ascii=False) + "\n")

    def load(self) -> tuple[Any, Any]:
        """(model, tokenizer), loaded on first use."""
        if self._model is None:
            from promptshrink.model_loading import load_causal_lm

            self._model = load_causal_lm(self.model_name)
        return self._model

    @staticmethod
    def encode(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
        """Prompt token ids: the chat template with the assistant turn opened."""
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    def generate(self, prompts: list[list[int]], cap: int) -> list[str]:
        """Greedy continuations of token-id prompts in one batch (raw text, special tokens dropped).

        The rows' common prefix (the chat template's system turn) is run once and its KV cache shared; the rest
        of each row is left-padded after it, with the attention mask hiding the padding.
        """
        import torch
        from transformers import DynamicCache, StoppingCriteriaList

        model, tokenizer = self.load()
        shared = _common_prefix(prompts) if len(prompts) > 1 else 0
        tails = [p[shared:] for p in prompts]
        width = max(map(len, tails))
        pad = tokenizer.pad_token_id
        ids = torch.tensor([prompts[0][:shared] + [pad] * (width - len(t)) + t for t in tails], device=model.device)
        mask = torch.tensor([[1] * shared + [0] * (width - len(t)) + [1] * len(t) for t in tails], device=model.device)
        with torch.inference_mode():
            cache = DynamicCache()
            # transformers >= 5.2x names the KV cache `cache`; older 5.x (5.17 on the GPU machine) `past_key_values`
            word = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
            if shared:
                model(input_ids=ids[:1, :shared], **{word: cache}, use_cache=True, logits_to_keep=1)
                cache.batch_repeat_interleave(len(prompts))
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                **{word: cache},
                max_new_tokens=cap,
                do_sample=False,
                use_cache=True,
                stopping_criteria=StoppingCriteriaList([FirstLineDone(tokenizer, ids.shape[1])]),
                pad_token_id=pad,
                top_p=None,
                top_k=None,
                temperature=None,
            )
        return tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)


def _common_prefix(prompts: list[list[int]]) -> int:
    """Length of the token prefix every prompt shares, leaving each at least one token of its own."""
    shared = 0
    for column in zip(*prompts):
        if len(set(column)) > 1:
            break
        shared += 1
    return min(shared, min(map(len, prompts)) - 1)


class OpenAIReader:
    """Any OpenAI-compatible chat endpoint as the reader (off unless the user passes a base URL)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        import httpx

        key = api_key or os.environ.get("OPENAI_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout)
        self.model = model
        self.name = f"openai:{model}"

    def answer(self, context: str, question: str) -> str:
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": 0,
            "max_tokens": 32,
            "messages": [
                {"role": "system", "content": INSTRUCTION},
                {"role": "user", "content": PROMPT.format(context=context, question=question)},
            ],
        }
        response = self.client.post("/chat/completions", json=body)
        response.raise_for_status()
        return response.json()["choices"][0]["message"]["content"].strip().split("\n")[0]
