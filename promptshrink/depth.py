"""How deeply JSON-like input may nest: one limit for the library (Python values) and the service (raw bodies).

Deeper input is refused with `InvalidInputError` (HTTP 422) instead of failing deep inside: Python's
``copy.deepcopy`` and ``json`` and pydantic's serializer all stop at a recursion limit (pydantic's near 255
levels), which a 1 MiB body of brackets passes easily.
"""

from __future__ import annotations

import re
from typing import Any

from .errors import InvalidInputError

MAX_DEPTH = 64
_TOKENS = re.compile(rb'[\[\]{}"\\]')


def too_deep(where: str, limit: int = MAX_DEPTH) -> InvalidInputError:
    return InvalidInputError(
        f"{where} nests arrays/objects more than {limit} levels deep; at most {limit} are accepted"
    )


def check_depth(value: Any, where: str = "input", limit: int = MAX_DEPTH) -> None:
    """Raise `InvalidInputError` if ``value`` holds lists/tuples/dicts nested more than ``limit`` levels deep
    (iterative: no recursion limit of its own)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, (list, tuple)):
            continue
        if depth >= limit:
            raise too_deep(where, limit)
        stack.extend((child, depth + 1) for child in item)


class JsonDepthScanner:
    """Tracks the nesting depth of a JSON text fed in chunks, without parsing it.

    Until the body holds more than ``limit`` opening brackets in all (strings included) it cannot be too deep, and
    chunks are only counted; past that, the held chunks and every later one are scanned for brackets outside
    strings, so the common body costs two ``bytes.count`` calls per chunk.
    """

    def __init__(self, limit: int = MAX_DEPTH) -> None:
        self.limit = limit
        self._openers = 0
        self._held: list[bytes] | None = []  # None once scanning
        self._offset = 0
        self._depth = 0
        self._in_string = False
        self._escaped_at = -1  # the offset of the byte a backslash escapes

    def feed(self, chunk: bytes) -> bool:
        """Add the next chunk; False once the text has nested deeper than ``limit``."""
        if self._held is not None:
            self._openers += chunk.count(b"[") + chunk.count(b"{")
            self._held.append(chunk)
            if self._openers <= self.limit:
                return True
            held, self._held = self._held, None
            return all(self._scan(c) for c in held)
        return self._scan(chunk)

    def _scan(self, chunk: bytes) -> bool:
        base = self._offset
        self._offset += len(chunk)
        for match in _TOKENS.finditer(chunk):
            at, token = base + match.start(), match.group()
            if self._in_string:
                if at == self._escaped_at:
                    continue
                if token == b"\\":
                    self._escaped_at = at + 1
                elif token == b'"':
                    self._in_string = False
            elif token == b'"':
                self._in_string = True
            elif token in b"[{":
                self._depth += 1
                if self._depth > self.limit:
                    return False
            elif token in b"]}":
                self._depth -= 1
        return True
