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


def lm_available() -> bool:
    from promptshrink.errors import ModelUnavailableError
    from promptshrink.model_loading import DEFAULT_LM, resolve

    try:
        resolve(DEFAULT_LM)
    except (ModelUnavailableError, KeyError):
        return False
    return True


needs_lm = pytest.mark.skipif(not lm_available(), reason="bundled LM package not installed (see models/README.md)")
