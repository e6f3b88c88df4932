"""CONTRIBUTING.md's recipes hold: a method is one file, an option is one field; a plain checkout says what to do."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
import types

import promptshrink as ps
from promptshrink import registry
from promptshrink.cli import add_option_flags, options_from
from promptshrink.pipeline import make_request
from promptshrink.request import CompressOptions, request_fields
from promptshrink.service.schemas import options_model
from tests.support import ROOT

TEXT = "First comes the opening. Then a middle part. More middle here. Still the middle. At last the end."


def _recipe(section: str) -> str:
    """The first python block after the heading ``section`` of CONTRIBUTING.md."""
    doc = (ROOT / "CONTRIBUTING.md").read_text()
    return re.search(r"```python\n(.*?)```", doc[doc.index(f"## {section}") :], re.DOTALL).group(1)  # type: ignore[union-attr]


def test_the_add_a_method_recipe_is_one_file() -> None:
    module = types.ModuleType("promptshrink.methods.edges")
    module.__package__ = "promptshrink.methods"
    registry.method_names()
    sys.modules[module.__name__] = module  # as an import of the file would
    exec(compile(_recipe("Adding a text method"), "promptshrink/methods/edges.py", "exec"), module.__dict__)
    try:
        out = ps.compress(TEXT, "edges", rate=0.5, unit="sentence", tail_weight=0.5)
        assert out.text.startswith("First comes the opening.") and out.text.endswith("At last the end.")
        assert "Still the middle." not in out.text and out.method == "edges"
        (entry,) = [m for m in ps.describe_methods() if m["name"] == "edges"]
        assert [p["name"] for p in entry["parameters"]] == ["unit", "tail_weight"]
        assert all(p["description"] for p in entry["parameters"])
    finally:
        registry.METHODS.unregister("edges")
        del sys.modules[module.__name__]


def test_the_add_an_option_recipe_is_one_field() -> None:
    doc = "shout the output"
    extended = dataclasses.make_dataclass(
        "Extended",
        [("shout", bool, dataclasses.field(default=False, metadata={"doc": doc}))],
        bases=(CompressOptions,),
        frozen=True,
    )
    body = options_model(extended, "ExtendedBody")  # the service's request body
    assert body.model_json_schema()["properties"]["shout"]["description"] == doc
    assert body.model_validate({"shout": True, "rate": 0.5}).shout is True  # type: ignore[attr-defined]
    assert "shout" in request_fields(extended)  # what the client sends as a body field
    parser = argparse.ArgumentParser()
    add_option_flags(parser, cls=extended)
    options = options_from(parser.parse_args(["--shout", "-r", "0.4"]), extended)
    assert options.shout is True and options.rate == 0.4
    request = make_request(TEXT, options, ps.get_tokenizer(), None)
    assert request.options.shout is True  # what a compressor reads  # type: ignore[union-attr]


def test_serve_from_a_plain_checkout_says_to_install() -> None:
    # an interpreter without the editable install's finder, as in a fresh clone: service/ is not promptshrink.service
    code = (
        "import sys, runpy; "
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]; "
        "sys.path_hooks[:] = [h for h in sys.path_hooks if 'editable' not in getattr(h, '__module__', '')]; "
        "sys.argv = ['promptshrink', 'serve']; runpy.run_module('promptshrink.cli', run_name='__main__')"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "plain checkout" in run.stderr and "pip install -e '.[service]'" in run.stderr
