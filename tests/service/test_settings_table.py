"""docs/service.md's settings table is the one generated from `Settings`: a new setting cannot go undocumented."""

from __future__ import annotations

import dataclasses

from promptshrink.service.config import Settings, settings_table
from tests.support import ROOT

START = "<!-- settings table: settings_table() in service/config.py -->\n"
END = "<!-- end of settings table -->\n"


def test_every_setting_has_a_doc() -> None:
    undocumented = [f.name for f in dataclasses.fields(Settings) if not f.metadata.get("doc")]
    assert not undocumented, f"document these Settings fields (setting(doc=...)): {undocumented}"


def test_docs_table_is_the_generated_one() -> None:
    doc = (ROOT / "docs" / "service.md").read_text()
    assert doc.count(START) == 1 and doc.count(END) == 1, "docs/service.md must hold the settings table markers"
    table = doc[doc.index(START) + len(START) : doc.index(END)]
    regenerate = "python -c 'from promptshrink.service.config import settings_table as t; print(t(), end=\"\")'"
    assert table == settings_table(), f"docs/service.md's settings table is stale: paste the output of {regenerate}"
    assert table.count("\n") == len(dataclasses.fields(Settings)) + 2  # header, rule, one row per setting
