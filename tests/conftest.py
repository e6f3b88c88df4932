"""Shared fixtures: real text, and offline settings for every test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def article() -> str:
    """A real 3,080-word English article: the 1986 State of the Union address (public domain)."""
    return (DATA / "article.txt").read_text()


def model_installed(alias: str) -> bool:
    """Whether the packages that ship ``alias`` are installed. Only a missing package skips: a broken join,
    checksum or dequantisation must fail the tests that load the model, not hide them."""
    import importlib.util

    from promptshrink.model_loading import manifest

    return all(importlib.util.find_spec(module) is not None for module, _ in manifest()[alias].parts)


def lm_available() -> bool:
    return model_installed("default-lm")


needs_lm = pytest.mark.skipif(not lm_available(), reason="bundled LM package not installed (see models/README.md)")
