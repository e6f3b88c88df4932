"""Compressors register by name; every module in `promptshrink.methods` is discovered automatically."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import UnknownMethodError
from .params import describe_parameters

if TYPE_CHECKING:
    from .methods.base import Compressor

_REGISTRY: dict[str, type[Compressor]] = {}
_DISCOVERED = False
C = TypeVar("C", bound="type[Compressor]")


def register(cls: C) -> C:
    """Class decorator (above ``@dataclass``): make a compressor available under ``cls.name``."""
    if "__dataclass_fields__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} must be a @dataclass (put @register above @dataclass)")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"two compressors claim the name {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    methods = importlib.import_module(f"{__package__}.methods")
    for info in pkgutil.iter_modules(methods.__path__):
        if info.name != "base":
            importlib.import_module(f"{methods.__name__}.{info.name}")
    _DISCOVERED = True


def get_method(name: str) -> type[Compressor]:
    _discover()
    if not isinstance(name, str) or name not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def method_names() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def describe_methods() -> list[dict[str, Any]]:
    """Name, summary, kind and parameters (name, type, default, description) of every method."""
    _discover()
    return [
        {
            "name": name,
            "summary": cls.summary,
            "extractive": cls.extractive,
            "uses_question": cls.uses_question,
            "budget_is_ceiling": cls.budget_is_ceiling,
            "parameters": describe_parameters(cls),
        }
        for name, cls in sorted(_REGISTRY.items())
    ]
