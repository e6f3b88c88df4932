"""Budgets: a kept-fraction `rate` or an absolute `target_tokens`, both in the target tokenizer."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InvalidInputError

DEFAULT_RATE = 0.5


@dataclass(frozen=True)
class Budget:
    """Exactly one of ``rate`` (kept fraction in (0, 1]) or ``target_tokens`` (> 0) is set."""

    rate: float | None = None
    target_tokens: int | None = None

    def limit(self, original_tokens: int) -> int:
        """Most target-tokenizer tokens the output may have."""
        if self.target_tokens is not None:
            return self.target_tokens
        assert self.rate is not None
        return max(1, math.floor(self.rate * original_tokens + 1e-9))

    def keeps_everything(self, original_tokens: int) -> bool:
        return self.limit(original_tokens) >= original_tokens

    def describe(self) -> str:
        return f"rate={self.rate}" if self.rate is not None else f"target_tokens={self.target_tokens}"


def make_budget(rate: float | None = None, target_tokens: int | None = None) -> Budget:
    """Validate the caller's budget; with neither given the rate defaults to 0.5."""
    if rate is not None and target_tokens is not None:
        raise InvalidInputError("give either rate or target_tokens, not both")
    if target_tokens is not None:
        if isinstance(target_tokens, bool) or not isinstance(target_tokens, int):
            raise InvalidInputError(f"target_tokens must be a positive integer, got {target_tokens!r}")
        if target_tokens <= 0:
            raise InvalidInputError(f"target_tokens must be > 0, got {target_tokens}")
        return Budget(target_tokens=target_tokens)
    if rate is None:
        return Budget(rate=DEFAULT_RATE)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise InvalidInputError(f"rate must be a number in (0, 1], got {rate!r}")
    if not 0 < rate <= 1:
        raise InvalidInputError(f"rate must be in (0, 1] (the kept fraction), got {rate}")
    return Budget(rate=float(rate))
