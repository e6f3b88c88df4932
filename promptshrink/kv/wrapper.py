"""The base of the presses that wrap a scorer press (``decoding``, ``headwise``): its name, options and instance."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import InvalidInputError, UnknownPressError
from .base import BasePress, ScorerPress
from .registry import get_press, make_press


@dataclass
class ScorerWrapper(BasePress):
    """A press built around a registered :class:`ScorerPress`, made with the wrapper's ``ratio`` and ``window``.

    Args:
        press: Name of the scorer press (``snapkv``, ``pyramidinfer``, ``qfilters``...) that ranks the entries.
        options: Keyword arguments of the wrapped press (e.g. ``{"kernel": 7}``, or ``filters`` for ``qfilters``).
    """

    press: str = "snapkv"
    options: dict | None = None
    _inner: ScorerPress | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.press, str):
            raise InvalidInputError(f"press must be the name of a scorer press, got {self.press!r}")
        try:
            cls = get_press(self.press)
        except UnknownPressError as exc:
            raise InvalidInputError(f"press: {exc}") from exc
        if not issubclass(cls, ScorerPress):
            raise InvalidInputError(f"press must name a scorer press (one that ranks entries), got {self.press!r}")
        if self.options is not None and (
            not isinstance(self.options, dict) or {"ratio", "window", "model"} & set(self.options)
        ):
            raise InvalidInputError(f"options must be a dict of the wrapped press's own fields, got {self.options!r}")

    @classmethod
    def for_model(cls, model: nn.Module | None = None, **kwargs: Any) -> ScorerWrapper:
        obj = cls(**kwargs)
        obj._inner = obj._build(model)
        return obj

    def _build(self, model: nn.Module | None) -> ScorerPress:
        inner = make_press(self.press, self.ratio, model, window=self.window, **(self.options or {}))
        assert isinstance(inner, ScorerPress)
        return inner

    @property
    def inner(self) -> ScorerPress:
        """The wrapped scorer press (built on first use when the wrapper was not made by ``for_model``)."""
        if self._inner is None:
            self._inner = self._build(None)
        return self._inner

    @property
    def needs_queries(self) -> bool:  # type: ignore[override]
        return self.inner.needs_queries

    def reset(self) -> None:
        self.inner.reset()

    def n_keep(self, seq_len: int, layer: int = 0, n_layers: int = 1) -> int:
        return self.inner.n_keep(seq_len, layer, n_layers)
