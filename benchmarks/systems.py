"""What the runner compares: every registered promptshrink method and peer packages, behind one small interface."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import promptshrink
from promptshrink.params import parse_options
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
    """A registered method, optionally with options (a variant such as ``auto:adaptive=true``); list-shaped items
    (documents, demonstrations) go through `compress_passages`."""

    kind = "promptshrink"

    def __init__(self, name: str, options: dict[str, Any] | None = None) -> None:
        self.method = name
        self.options = dict(options or {})
        self.name = name + (":" + ",".join(f"{k}={json.dumps(v)}" for k, v in self.options.items()) if options else "")

    def unavailable(self) -> str | None:
        return None

    def compress(self, item: Item, budget: BudgetSpec) -> Output:
        start = time.perf_counter()
        kwargs = {**self.options, **budget.kwargs(item.task)}
        if item.documents:
            result = promptshrink.compress_passages(item.documents, item.question, method=self.method, **kwargs)
            text = "\n\n".join(p["text"] for p in result.passages if p["text"])
        else:
            text = promptshrink.compress(item.context, self.method, question=item.question, **kwargs).text
        return measured(item, text, start)


def parse_system(spec: str) -> PromptshrinkMethod:
    """``name`` or ``name:key=value,...`` (each value JSON, else a string), e.g. ``distilled:question_weight=0``."""
    name, _, rest = spec.partition(":")
    options = parse_options(list(filter(None, rest.split(","))), f"method variant {spec!r}")
    promptshrink.get_compressor(name, **options)  # unknown names and bad options fail here, before any work
    return PromptshrinkMethod(name, options)


def promptshrink_systems(names: list[str] | None = None) -> list[PromptshrinkMethod]:
    """The systems ``names`` (`parse_system` specs, in order), or every method registered now (so new methods join
    the benchmark without code changes)."""
    if names is not None:
        return [parse_system(spec) for spec in names]
    return [PromptshrinkMethod(m["name"]) for m in promptshrink.describe_methods()]
