"""Readers that judge a (compressed) context: the bundled LM's answer log-likelihood, optional generative readers."""

from __future__ import annotations

import os
from typing import Any

PROMPT = "{context}\n\nQuestion: {question}\nAnswer:"
INSTRUCTION = "Answer the question from the context with a short phrase copied from it. Reply with the answer only."


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
