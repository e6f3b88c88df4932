"""The contract of every registered text method and KV press, parametrised from the registries.

A newly registered method or press is checked here without editing this file: text methods on a short real
text with the bundled models, presses on a tiny random-weight Llama on CPU.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import promptshrink as ps
from promptshrink import kv
from promptshrink.errors import UnknownPressError
from promptshrink.params import field_docs
from promptshrink.registry import describe_methods, get_method, method_names
from tests.support import DATA
from tests.support.tiny_llama import tiny_model

TEXT = "\n\n".join((DATA / "article.txt").read_text().split("\n\n")[:4])  # 4 paragraphs, ~350 cl100k tokens
KEEP = "locked factory gates"
TARGET = 100
METHODS = method_names()
EXPENSIVE = {"dspc", "scope"}  # one compression each; their own test files check determinism
OPTIONS = {"scope": {"max_rewrites": 1}}  # one generative rewrite is enough for the contract on 2 CPU cores
PRESSES = kv.press_names()
EVICTING = [name for name in PRESSES if kv.get_press(name).evicts]
SEQ = 200


def bad_values(type_: str) -> list[Any]:
    """Values of the wrong kind or out of every range a parameter of this annotated type could accept."""
    if "str" in type_:
        return [5]
    if "bool" in type_:
        return ["yes", 1]
    if "int" in type_:
        return [-1, 2.5, "many"]
    if "float" in type_:
        return [math.nan, math.inf, "many"]
    return ["many"]


def bad_cases(described: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    return [
        (entry["name"], p["name"], value)
        for entry in described
        for p in entry["parameters"]
        for value in bad_values(p["type"])
    ]


def check_documented(cls: type, parameters: list[dict[str, Any]]) -> None:
    """Every constructor field is listed with a description, and the docstring documents no missing field."""
    fields = dataclasses.fields(cls)
    assert [p["name"] for p in parameters] == [f.name for f in fields if f.init]
    assert all(p["description"] and "\n" not in p["description"] for p in parameters), parameters
    assert set(field_docs(cls)) <= {f.name for f in fields}


# ---------------------------------------------------------------------------------------------- text methods


@pytest.fixture(scope="module")
def compressed() -> Callable[..., ps.CompressionResult]:
    """``compressed(method, **options)``: one compression per distinct call, shared by the tests of this module."""
    done: dict[tuple[str, tuple[tuple[str, Any], ...]], ps.CompressionResult] = {}

    def run(method: str, **options: Any) -> ps.CompressionResult:
        key = (method, tuple(sorted(options.items())))
        if key not in done:
            done[key] = ps.compress(TEXT, method, **options, **OPTIONS.get(method, {}))
        return done[key]

    return run


@pytest.mark.parametrize("method", METHODS)
def test_budget_keep_and_order(method: str, compressed) -> None:  # noqa: ANN001
    r = compressed(method, target_tokens=TARGET, keep=(KEEP,))
    tok = ps.get_tokenizer("cl100k_base")
    assert r.method == method
    assert r.original_tokens == tok.count(TEXT)
    assert r.compressed_tokens == tok.count(r.text) <= TARGET
    assert KEEP in r.text
    assert "".join(s.text for s in r.segments) == TEXT  # the segments explain the whole input
    if not get_method(method).extractive:
        assert r.text and r.text != TEXT
        return
    kept = [s for s in r.segments if s.kept]
    assert [s.start for s in kept] == sorted(s.start for s in kept)
    assert all(TEXT[s.start : s.end] == s.text for s in kept)
    assert r.text == "".join(s.text for s in kept).lstrip()  # an ordered subsequence of the input


@pytest.mark.parametrize("method", METHODS)
def test_rate_one_returns_the_input(method: str, compressed) -> None:  # noqa: ANN001
    r = compressed(method, rate=1.0)
    assert r.text == TEXT and r.compressed_tokens == r.original_tokens


@pytest.mark.parametrize("method", [m for m in METHODS if m not in EXPENSIVE])
def test_same_seed_same_output(method: str, compressed) -> None:  # noqa: ANN001
    first = compressed(method, target_tokens=TARGET, keep=(KEEP,))
    again = ps.compress(TEXT, method, target_tokens=TARGET, keep=(KEEP,), **OPTIONS.get(method, {}))
    assert again.text == first.text


@pytest.mark.parametrize(("method", "parameter", "value"), bad_cases(describe_methods()))
def test_bad_parameter_values_are_invalid_input(method: str, parameter: str, value: Any) -> None:
    with pytest.raises(ps.InvalidInputError, match=parameter):
        ps.get_compressor(method, **{parameter: value})


@pytest.mark.parametrize("method", METHODS)
def test_unknown_option_is_invalid_input(method: str) -> None:
    with pytest.raises(ps.InvalidInputError, match="no_such_option"):
        ps.get_compressor(method, no_such_option=1)


@pytest.mark.parametrize("entry", describe_methods(), ids=lambda e: e["name"])
def test_describe_methods_documents_every_field(entry: dict[str, Any]) -> None:
    cls = get_method(entry["name"])
    assert entry["summary"] and entry["extractive"] == cls.extractive
    check_documented(cls, entry["parameters"])


# ---------------------------------------------------------------------------------------------- KV presses


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


@pytest.fixture(scope="module")
def make(model) -> Callable[..., kv.BasePress]:  # noqa: ANN001
    """``make(name, **kwargs)``: a press for the tiny model; Q-Filters cannot be loaded for random weights, so
    they are computed here."""
    ids = torch.randint(0, 128, (1, 64), generator=torch.Generator().manual_seed(0))
    per_model = {"qfilters": {"filters": kv.compute_qfilters(model, [ids])}}

    def build(name: str, **kwargs: Any) -> kv.BasePress:
        return kv.make_press(name, model=model, **{**per_model.get(name, {}), **kwargs})

    return build


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 128, (1, SEQ), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("ratio", [0.25, 0.5])
@pytest.mark.parametrize("name", EVICTING)
def test_press_keeps_its_keep_count(name: str, ratio: float, model, make, ids) -> None:  # noqa: ANN001
    press = make(name, ratio=ratio)
    kept = [layer.keys.shape[-2] for layer in kv.prefill(model, ids, press).layers]
    assert kept == [press.n_keep(SEQ, i, len(kept)) for i in range(len(kept))]
    assert sum(kept) / len(kept) == pytest.approx(ratio * SEQ, abs=0.05 * SEQ)


@pytest.mark.parametrize("name", [name for name in PRESSES if name not in EVICTING])
def test_press_that_does_not_evict_keeps_every_entry_and_changes_them(name: str, model, make, ids) -> None:  # noqa: ANN001
    full, pressed = kv.prefill(model, ids), kv.prefill(model, ids, make(name, ratio=0.5))
    assert [layer.keys.shape for layer in pressed.layers] == [layer.keys.shape for layer in full.layers]
    assert not all(torch.equal(a.keys, b.keys) for a, b in zip(full.layers, pressed.layers))


@pytest.mark.parametrize("name", PRESSES)
def test_press_ratio_one_keeps_everything(name: str, model, make, ids) -> None:  # noqa: ANN001
    full, pressed = kv.prefill(model, ids), kv.prefill(model, ids, make(name, ratio=1.0))
    for a, b in zip(full.layers, pressed.layers):
        assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)


@pytest.mark.parametrize("ratio", [0, -0.1, 1.5, math.nan, "half", True])
@pytest.mark.parametrize("name", PRESSES)
def test_press_bad_ratio_is_invalid_input(name: str, ratio: Any, make) -> None:  # noqa: ANN001
    with pytest.raises(ps.InvalidInputError, match="ratio"):
        make(name, ratio=ratio)


@pytest.mark.parametrize(("name", "parameter", "value"), bad_cases(kv.describe_presses()))
def test_press_bad_parameter_values_are_invalid_input(name: str, parameter: str, value: Any, make) -> None:  # noqa: ANN001
    with pytest.raises(ps.InvalidInputError, match=parameter):
        make(name, **{parameter: value})


def test_unknown_press_is_a_promptshrink_error() -> None:
    with pytest.raises(UnknownPressError, match="available: .*snapkv") as info:
        kv.make_press("snapkv-9000")
    assert isinstance(info.value, ps.PromptShrinkError) and isinstance(info.value, KeyError)
    with pytest.raises(ps.InvalidInputError, match="no_such_option"):
        kv.make_press("snapkv", no_such_option=1)


@pytest.mark.parametrize("entry", kv.describe_presses(), ids=lambda e: e["name"])
def test_describe_presses_documents_every_field(entry: dict[str, Any]) -> None:
    cls = kv.get_press(entry["name"])
    assert entry["summary"]
    check_documented(cls, entry["parameters"])
