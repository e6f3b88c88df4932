"""The press registry: presses register by name with ``@register_press`` (modules of `promptshrink.kv` are found)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import InvalidInputError, UnknownPressError
from ..registry import Registry

if TYPE_CHECKING:
    from .base import BasePress

PRESSES: Registry[BasePress] = Registry("press", "promptshrink.kv", UnknownPressError)
register_press = PRESSES.register
get_press = PRESSES.get
press_names = PRESSES.names


def describe_presses() -> list[dict[str, Any]]:
    """Name, summary and parameters (name, type, default, description) of every press."""
    return PRESSES.describe(lambda cls: {})


def make_press(name: str, ratio: float = 0.5, model: Any = None, **kwargs: Any) -> BasePress:
    """A press by name, set up for ``model`` (``qfilters`` loads the filters saved for it under ``models/``)."""
    cls = get_press(name)
    try:
        return cls.for_model(model, ratio=ratio, **kwargs)
    except TypeError as exc:
        raise InvalidInputError(f"bad arguments for press {name!r}: {exc}") from exc
