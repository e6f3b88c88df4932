"""One registry shape for compression methods and KV-cache presses: classes register by name, modules are found.

`Registry[T]` maps names to ``@dataclass`` classes, discovers every module of its package on first use, and keeps
one shared instance per (name, options) so that models load once. `METHODS` is the registry of compressors
(`promptshrink.methods`); `promptshrink.kv.registry.PRESSES` the one of presses.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import InvalidInputError, PromptShrinkError, UnknownMethodError
from .params import describe_parameters

if TYPE_CHECKING:
    from .methods.base import Compressor

T = TypeVar("T")
C = TypeVar("C", bound=type)


class Registry(Generic[T]):
    """Classes of one kind (``kind``: "method", "press") by their ``name`` class attribute.

    Args:
        kind: What the entries are, for messages.
        package: The package whose modules are imported on first lookup (each registers its classes).
        unknown: The error raised for a name nobody registered.
        skip: Module names of ``package`` that hold no entries.
    """

    def __init__(self, kind: str, package: str, unknown: type[PromptShrinkError], skip: Collection[str] = ()) -> None:
        self.kind, self.package, self.unknown, self.skip = kind, package, unknown, frozenset(skip)
        self._classes: dict[str, type[T]] = {}
        self._instances: dict[tuple[Any, ...], T] = {}
        self._lock = threading.Lock()
        self._discovered = False

    def register(self, cls: C) -> C:
        """Class decorator (above ``@dataclass``): make ``cls`` available under ``cls.name``."""
        if "__dataclass_fields__" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must be a @dataclass (put the register decorator above @dataclass)")
        name = cls.name  # type: ignore[attr-defined]
        if name in self._classes and self._classes[name] is not cls:
            raise ValueError(f"two {self.kind}s claim the name {name!r}")
        self._classes[name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget ``name`` and its shared instances (tests register throwaway entries)."""
        self._classes.pop(name, None)
        with self._lock:
            for key in [k for k in self._instances if k[0] == name]:
                del self._instances[key]

    def _discover(self) -> None:
        if self._discovered:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name not in self.skip:
                importlib.import_module(f"{self.package}.{info.name}")
        self._discovered = True

    def get(self, name: str) -> type[T]:
        """The class registered under ``name``."""
        self._discover()
        if not isinstance(name, str) or name not in self._classes:
            raise self.unknown(f"unknown {self.kind} {name!r}; available: {', '.join(sorted(self._classes))}")
        return self._classes[name]

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._classes)

    def items(self) -> list[tuple[str, type[T]]]:
        self._discover()
        return sorted(self._classes.items())

    def describe(self, capabilities: Callable[[type[T]], dict[str, Any]]) -> list[dict[str, Any]]:
        """Name, summary, ``capabilities(cls)`` and parameters (name, type, default, description) of each entry."""
        return [
            {"name": name, "summary": cls.summary, **capabilities(cls), "parameters": describe_parameters(cls)}  # type: ignore[attr-defined]
            for name, cls in self.items()
        ]

    def instance(self, name: str, **options: Any) -> T:
        """An instance of ``name`` built with ``options``, shared between calls with the same options."""
        cls = self.get(name)
        try:
            # the type is part of the key: 1 == True == 1.0 must not share an instance (1 is not a valid flag)
            key = (name, tuple(sorted((k, type(v).__name__, v) for k, v in options.items())))
            hash(key)
        except TypeError as exc:
            raise InvalidInputError(f"{self.kind} options must be plain values: {exc}") from exc
        with self._lock:
            if key not in self._instances:
                try:
                    self._instances[key] = cls(**options)
                except TypeError as exc:
                    raise InvalidInputError(f"bad options for {self.kind} {name!r}: {exc}") from exc
            return self._instances[key]


METHODS: Registry[Compressor] = Registry("method", "promptshrink.methods", UnknownMethodError, skip=("base",))
register = METHODS.register
get_method = METHODS.get
method_names = METHODS.names


def get_compressor(method: str = "auto", **options: Any) -> Compressor:
    """A compressor instance, shared between calls with the same options (so models load once)."""
    if METHODS.get(method).requires_lm:
        from .model_loading import lm_stack

        lm_stack()
    return METHODS.instance(method, **options)


def describe_methods() -> list[dict[str, Any]]:
    """Name, summary, kind and parameters (name, type, default, description) of every method."""
    return METHODS.describe(
        lambda cls: {
            "extractive": cls.extractive,
            "uses_question": cls.uses_question,
            "budget_is_ceiling": cls.budget_is_ceiling,
        }
    )
