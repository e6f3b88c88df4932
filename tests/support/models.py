"""Which bundled models are installed (a test skips only when a model package is missing), and helpers that
compare results across models and devices."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import promptshrink as ps
from promptshrink.model_loading import manifest


def model_installed(alias: str) -> bool:
    """Whether the packages that ship ``alias`` are installed. Only a missing package skips: a broken join,
    checksum or dequantisation must fail the tests that load the model, not hide them."""
    return all(importlib.util.find_spec(module) is not None for module, _ in manifest()[alias].parts)


def lm_available() -> bool:
    """Whether the bundled default LM is installed."""
    return model_installed("default-lm")


needs_lm = pytest.mark.skipif(not lm_available(), reason="bundled LM package not installed (see models/README.md)")


def agreement(a: ps.CompressionResult, b: ps.CompressionResult) -> float:
    """The share of segments that two results of the same text keep or drop alike."""
    assert [s.start for s in a.segments] == [s.start for s in b.segments]
    return float(np.mean([x.kept == y.kept for x, y in zip(a.segments, b.segments)]))


def random_weight_model(directory: Path) -> str:
    """The bundled LM's architecture (config + tokenizer) with seeded random weights, saved to ``directory``.

    $PROMPTSHRINK_ARCH_DIR points at a folder with config.json and the tokenizer files (on a machine without the
    model package); else they are taken from the bundled model.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    source = os.environ.get("PROMPTSHRINK_ARCH_DIR")
    if source is None:
        if not lm_available():
            pytest.skip("no architecture source: set PROMPTSHRINK_ARCH_DIR or install the bundled LM")
        source = str(manifest()["default-lm"].locate())
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(source)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(source).save_pretrained(directory)
    return str(directory)
