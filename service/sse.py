"""Server-sent events framing for the proxy relay: whole events only, in time linear in the stream's length."""

from __future__ import annotations

SEPARATORS = (b"\n\n", b"\r\n\r\n")
_LOOKBACK = max(map(len, SEPARATORS)) - 1  # a separator may straddle two chunks by at most this many bytes


class EventBuffer:
    """Collects stream bytes and hands out the prefix that holds complete events.

    Only each new chunk (plus a few bytes of look-back) is searched for the end of an event, and buffered chunks
    are joined once, when an event ends: relaying one 20 MB event that arrives in many small chunks costs what
    relaying 20 MB costs.
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._tail = b""  # the last bytes buffered, where a separator that ends in the next chunk may start

    def feed(self, chunk: bytes) -> bytes:
        """Add ``chunk``; return the complete events buffered so far (``b""`` when none is complete yet)."""
        window = self._tail + chunk
        cut = max((i + len(sep) for sep in SEPARATORS if (i := window.rfind(sep)) >= 0), default=0)
        if not cut:
            self._parts.append(chunk)
            self._tail = window[-_LOOKBACK:]
            return b""
        cut -= len(self._tail)  # in ``chunk``: a separator within the tail alone was found one chunk earlier
        out = b"".join([*self._parts, chunk[:cut]])
        rest = chunk[cut:]
        self._parts, self._tail = [rest], rest[-_LOOKBACK:]
        return out

    @property
    def incomplete(self) -> bool:
        """Whether an event has started but not ended (blank lines between events do not count)."""
        return any(part.strip() for part in self._parts)
