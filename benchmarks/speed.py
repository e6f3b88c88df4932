"""Speed and memory measurement: latency per 1K input tokens, throughput, Python-heap and RSS peaks."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import psutil

from .metrics import percentile


class PeakMemory:
    """Peak Python-heap growth (tracemalloc) and peak resident-set growth (sampled every 5 ms) inside the block.

    tracemalloc sees Python allocations only (not torch tensors); the RSS delta sees everything, including
    models loaded inside the block.
    """

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.heap_peak_mb = 0.0
        self.rss_delta_mb = 0.0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._base = 0
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._base = self._peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        tracemalloc.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self._peak = max(self._peak, self._process.memory_info().rss)
        self.heap_peak_mb = heap_peak / 2**20
        self.rss_delta_mb = (self._peak - self._base) / 2**20


@dataclass
class Timing:
    """One compression call: input size in target-tokenizer tokens and wall time."""

    tokens: int
    seconds: float


def summarize(timings: Sequence[Timing]) -> dict[str, float | None]:
    """p50/p95 milliseconds per 1K input tokens and overall input tokens per second."""
    per_k = [1000 * t.seconds / (t.tokens / 1000) for t in timings if t.tokens]
    total_s = sum(t.seconds for t in timings)
    return {
        "ms_per_1k_p50": percentile(per_k, 50),
        "ms_per_1k_p95": percentile(per_k, 95),
        "tokens_per_s": sum(t.tokens for t in timings) / total_s if total_s else None,
        "calls": len(timings),
    }
