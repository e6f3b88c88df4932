"""What the runner compares: every registered promptshrink method and peer packages, behind one small interface."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import promptshrink
from promptshrink.target_tokenizer import DEFAULT_TOKENIZER, get_tokenizer

from .data import Item


@dataclass(frozen=True)
class BudgetSpec:
    """A kept-fraction ``rate`` for every task, or a per-task ``target_tokens`` budget."""

    label: str
    rate: float | None = None
    target_tokens: tuple[tuple[str, int], ...] = ()

    def kwargs(self, task: str) -> dict[str, Any]:
        if self.rate is not None:
            return {"rate": self.rate}
        return {"target_tokens": dict(self.target_tokens)[task]}


@dataclass
class Output:
    text: str
    original_tokens: int
    compressed_tokens: int
    seconds: float


class System(Protocol):
    name: str
    kind: str

    def unavailable(self) -> str | None:
        """Why this system cannot run here, or None."""

    def compress(self, item: Item, budget: BudgetSpec) -> Output: ...


def count(text: str) -> int:
    """Tokens in the target tokenizer every system is budgeted and measured in."""
    return get_tokenizer(DEFAULT_TOKENIZER).count(text)


def measured(item: Item, text: str, start: float) -> Output:
    seconds = time.perf_counter() - start
    return Output(text, count(item.context), count(text), seconds)


class PromptshrinkMethod:
    """A registered method; list-shaped items (documents, demonstrations) go through `compress_passages`."""

    kind = "promptshrink"

    def __init__(self, name: str) -> None:
        self.name = name

    def unavailable(self) -> str | None:
        return None

    def compress(self, item: Item, budget: BudgetSpec) -> Output:
        start = time.perf_counter()
        if item.documents:
            result = promptshrink.compress_passages(
                item.documents, item.question, method=self.name, **budget.kwargs(item.task)
            )
            text = "\n\n".join(p["text"] for p in result.passages if p["text"])
        else:
            kwargs = budget.kwargs(item.task)
            text = promptshrink.compress(item.context, self.name, question=item.question, **kwargs).text
        return measured(item, text, start)


def promptshrink_systems(names: list[str] | None = None) -> list[PromptshrinkMethod]:
    """Every method registered now (so new methods join the benchmark without code changes)."""
    registered = [m["name"] for m in promptshrink.describe_methods()]
    return [PromptshrinkMethod(n) for n in registered if names is None or n in names]
