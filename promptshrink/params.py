"""Parameters of methods and presses: dataclass fields, checked by the validators here, documented in ``Args:``.

Every check raises `InvalidInputError` with the parameter's name, so a bad option is the same clear error whether it
comes from Python, the CLI or the service. :func:`describe_parameters` reads the fields (name, type, default) and
each field's one-line description from the ``Args:`` section of the class docstring (Google style).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
from collections.abc import Collection
from typing import Any, TypeVar

from .errors import InvalidInputError

T = TypeVar("T")
_SECTION = re.compile(r"^(Args|Attributes):\s*$")
_ENTRY = re.compile(r"^(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


def integer(name: str, value: Any, low: int = 1) -> int:
    """``value`` if it is an int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInputError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def number(
    name: str, value: Any, low: float = -math.inf, high: float = math.inf, *, exclusive_low: bool = False
) -> float:
    """``value`` as a float if it is a finite real (not a bool) in [low, high] ((low, high] with ``exclusive_low``)."""
    real = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not real or not low <= value <= high or (exclusive_low and value == low):
        raise InvalidInputError(f"{name} must be a finite number{_bounds(low, high, exclusive_low)}, got {value!r}")
    return float(value)


def _bounds(low: float, high: float, exclusive_low: bool) -> str:
    if math.isfinite(high):
        return f" in {'(' if exclusive_low else '['}{low:g}, {high:g}]"
    if math.isfinite(low):
        return f" {'>' if exclusive_low else '>='} {low:g}"
    return ""


def one_of(name: str, value: T, choices: Collection[T]) -> T:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise InvalidInputError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def flag(name: str, value: Any) -> bool:
    """``value`` if it is a bool (not 0/1 or a string)."""
    if not isinstance(value, bool):
        raise InvalidInputError(f"{name} must be true or false, got {value!r}")
    return value


def non_empty(name: str, value: Any) -> str:
    """``value`` if it is a non-blank string (a model alias or name, a mode)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{name} must be a non-empty string, got {value!r}")
    return value


def parse_options(pairs: Collection[str], where: str = "--option") -> dict[str, Any]:
    """``key=value`` strings as options (each value read as JSON, else kept as a string); the CLI's ``--option``
    and the benchmarks' method variants use it. A pair without ``=`` or a key raises `InvalidInputError`."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{where} expects key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> one-line description, from the ``Args:`` sections of ``cls`` and its bases (nearest first)."""
    docs: dict[str, str] = {}
    for klass in cls.__mro__:
        for name, line in _args_section(klass.__dict__.get("__doc__") or "").items():
            docs.setdefault(name, line)
    return docs


def _args_section(doc: str) -> dict[str, str]:
    """``name: description`` entries of the ``Args:``/``Attributes:`` sections; continuation lines are joined."""
    out: dict[str, str] = {}
    indent, current = None, None
    for line in inspect.cleandoc(doc).splitlines():
        depth = len(line) - len(line.lstrip())
        if _SECTION.match(line):
            indent, current = 0, None
        elif indent is None:
            continue
        elif not line.strip() or depth == 0:
            indent = None
        elif (indent == 0 or depth == indent) and (entry := _ENTRY.match(line.strip())):
            indent, current = depth, entry.group(1)
            out[current] = entry.group(2).strip()
        elif current is not None:
            out[current] = f"{out[current]} {line.strip()}"
    return out


def describe_parameters(cls: type) -> list[dict[str, Any]]:
    """Name, type, default and description of every constructor field of the dataclass ``cls``."""
    docs = field_docs(cls)
    params = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        params.append({"name": f.name, "type": str(f.type), "default": default, "description": docs.get(f.name, "")})
    return params
