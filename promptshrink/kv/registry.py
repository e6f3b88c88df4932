"""Presses register by name with ``@register_press``; every module in `promptshrink.kv` is discovered automatically."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import InvalidInputError, UnknownPressError
from ..params import describe_parameters

if TYPE_CHECKING:
    from .base import BasePress

_PRESSES: dict[str, type[BasePress]] = {}
_DISCOVERED = False
P = TypeVar("P", bound="type[BasePress]")


def register_press(cls: P) -> P:
    """Class decorator (above ``@dataclass``): make a press available under ``cls.name``."""
    if "__dataclass_fields__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} must be a @dataclass (put @register_press above @dataclass)")
    if cls.name in _PRESSES and _PRESSES[cls.name] is not cls:
        raise ValueError(f"two presses claim the name {cls.name!r}")
    _PRESSES[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")
    _DISCOVERED = True


def get_press(name: str) -> type[BasePress]:
    """The press class registered under ``name``."""
    _discover()
    if not isinstance(name, str) or name not in _PRESSES:
        raise UnknownPressError(f"unknown press {name!r}; available: {', '.join(sorted(_PRESSES))}")
    return _PRESSES[name]


def press_names() -> list[str]:
    _discover()
    return sorted(_PRESSES)


def describe_presses() -> list[dict[str, Any]]:
    """Name, summary and parameters (name, type, default, description) of every press."""
    _discover()
    return [
        {"name": name, "summary": cls.summary, "parameters": describe_parameters(cls)}
        for name, cls in sorted(_PRESSES.items())
    ]


def make_press(name: str, ratio: float = 0.5, model: Any = None, **kwargs: Any) -> BasePress:
    """A press by name, set up for ``model`` (``qfilters`` loads the filters saved for it under ``models/``)."""
    cls = get_press(name)
    try:
        return cls.for_model(model, ratio=ratio, **kwargs)
    except TypeError as exc:
        raise InvalidInputError(f"bad arguments for press {name!r}: {exc}") from exc
