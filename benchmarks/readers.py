"""Readers that judge a (compressed) context: the bundled LM's answer log-likelihood, optional generative readers."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

PROMPT = "{context}\n\nQuestion: {question}\nAnswer:"
INSTRUCTION = "Answer the question from the context with a short phrase copied from it. Reply with the answer only."
# Per task: system instruction, user prompt, new-token cap, and whether the first line is the answer.
TASK_PROMPTS: dict[str, tuple[str, str, int, bool]] = {
    "qa": (INSTRUCTION, PROMPT, 12, True),
    "multidoc": (INSTRUCTION, PROMPT, 12, True),
    "needle": (INSTRUCTION, PROMPT, 12, True),
    "gsm": (
        "Solve the last problem step by step like the solved examples, and end with '#### <number>'.",
        PROMPT,
        120,
        False,
    ),
    "summary": ("Summarise the article in one sentence.", "{context}", 40, True),
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


class CachedChatReader:
    """Greedy chat-template answers from the bundled instruct LM, cached on disk by prompt hash.

    One prompt per task (`TASK_PROMPTS`); the cache (one JSON line per generation, keyed by the sha256 of the
    model, messages and token cap) makes re-runs and interrupted runs cheap.
    """

    def __init__(self, cache: Path, model: str = "large-lm") -> None:
        self.model_name = model
        self.cache_path = cache
        self._cache: dict[str, str] = {}
        if cache.is_file():
            for line in cache.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self._cache[entry["key"]] = entry["output"]
        self._model: Any = None
        self.generated_s: list[float] = []  # wall time of every generation that missed the cache

    def messages(self, task: str, context: str, question: str) -> tuple[list[dict[str, str]], int, bool]:
        system, template, cap, first_line = TASK_PROMPTS[task]
        user = template.format(context=context, question=question)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}], cap, first_line

    def key(self, messages: list[dict[str, str]], cap: int) -> str:
        blob = json.dumps([self.model_name, messages, cap], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def answer(self, task: str, context: str, question: str) -> str:
        messages, cap, first_line = self.messages(task, context, question)
        key = self.key(messages, cap)
        if key not in self._cache:
            import time

            start = time.perf_counter()
            output = self._generate(messages, cap, first_line)
            self.generated_s.append(time.perf_counter() - start)
            self._cache[key] = output
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.cache_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "output": output}, ensure_ascii=False) + "\n")
        output = self._cache[key]
        return output.strip().split("\n")[0].strip() if first_line else output.strip()

    def _generate(self, messages: list[dict[str, str]], cap: int, first_line: bool) -> str:
        import torch

        if self._model is None:
            from promptshrink.model_loading import load_causal_lm

            self._model = load_causal_lm(self.model_name)
        model, tokenizer = self._model
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, torch.Tensor):
            ids = ids["input_ids"]
        stops = ["\n"] if first_line else ["\n\n", "Question:"]
        with torch.inference_mode():
            out = model.generate(
                ids,
                max_new_tokens=cap,
                do_sample=False,
                stop_strings=stops,
                tokenizer=tokenizer,
                top_p=None,
                top_k=None,
                temperature=None,
            )
        return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


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
