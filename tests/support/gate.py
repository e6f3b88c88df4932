"""A test-only method that keeps working until the test releases it (or its deadline passes).

A real method's duration depends on the machine, so tests that need "a slot is busy right now" (queue full,
client retries, deadlines) were timing-dependent; this one is busy exactly as long as the test says. The ``gate``
fixture (tests/conftest.py) registers it for one test.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from promptshrink.methods.base import CompressionRequest, ExtractiveCompressor
from promptshrink.segmentation import Unit

STEPS = 6000  # 60 s at most, in 10 ms steps


@dataclass
class Gate(ExtractiveCompressor):
    """Test only: a method that is busy exactly as long as the test says."""

    name = "test_gate"
    requires_lm = False
    summary = "Test only: works (reporting progress every 10 ms) until released; keeps the first units."
    default_unit = "word"
    started = threading.Event()
    release = threading.Event()

    def score_units(self, request: CompressionRequest, units: Sequence[Unit]) -> np.ndarray:
        Gate.started.set()
        for step in range(STEPS):
            if Gate.release.wait(0.01):
                break
            request.report(step + 1, STEPS)
        return -np.arange(len(units), dtype=float)
