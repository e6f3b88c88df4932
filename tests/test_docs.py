"""Every code block of README.md and docs/*.md runs as written.

A block may be preceded by a marker line ``<!-- doctest: KIND -->``:
- none: ``python`` and ``bash`` blocks run in a fresh temporary folder (``yaml``/``json`` blocks must parse);
- ``server``: the block runs against a real ``promptshrink serve`` on the embedded default, started here
  (``http://127.0.0.1:8000`` in the block is replaced by its address);
- ``ci``: one of the README's two commands; ``.ci/run`` must run the test command exactly, and the service
  command's install steps must be the Dockerfile's;
- ``gpu (tests/FILE.py)``, ``upstream (tests/FILE.py)``, ``cluster (tests/FILE.py)``: needs what CI lacks (a
  CUDA device, an upstream LLM API, a Ray cluster); skipped here, and the named test file, which covers that
  path with real parts, must exist.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.servers import announced_url, wait_ready

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!--\s*doctest:\s*(\w+)(?:\s*\(([^)]*)\))?\s*-->")
FENCE = re.compile(r"^```(\w*)\s*$")
RUNNABLE = {"python", "bash", "sh"}
DATA = {"yaml", "json"}
SKIPPED = {"gpu", "upstream", "cluster"}
DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    kind: str | None
    note: str | None

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one markdown file, each with the marker on the non-blank line before it."""
    lines = path.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        opened = FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        start, lang = i, opened.group(1)
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        before = next((lines[k] for k in range(start - 1, -1, -1) if lines[k].strip()), "")
        marker = MARKER.search(before)
        code = "\n".join(lines[start + 1 : i]) + "\n"
        out.append(Block(path, start + 1, lang, code, *(marker.groups() if marker else (None, None))))
        i += 1
    return out


ALL = [b for path in DOCS for b in blocks(path)]


def test_every_block_has_a_known_language_and_marker() -> None:
    for b in ALL:
        assert b.lang in RUNNABLE | DATA, f"{b.id}: a code block needs a language the test knows ({b.lang!r})"
        assert b.kind in {None, "server", "ci", *SKIPPED}, f"{b.id}: unknown doctest marker {b.kind!r}"
        if b.kind in SKIPPED:
            assert b.note and (ROOT / b.note).is_file(), f"{b.id}: a skipped block names the test that covers it"


def test_the_two_readme_commands_are_ci_and_docker() -> None:
    readme = [b.code.strip() for b in ALL if b.kind == "ci" and b.path.name == "README.md"]
    assert len(readme) == 2, "the README keeps exactly two commands: serve, and test"
    serve_cmd, test_cmd = readme
    assert test_cmd.splitlines()[-1] in (ROOT / ".ci" / "run").read_text().splitlines()
    assert serve_cmd.endswith("promptshrink serve")
    # the Dockerfile's RUN installs with the same steps, in order (non-editable in the image), then adds ray
    docker_steps = [s.strip(" \\\n") for s in (ROOT / "Dockerfile").read_text().split("RUN ", 1)[1].split("&&")]
    readme_steps = [s.strip().replace("install -e ", "install ") for s in serve_cmd.split("&&")][:-1]
    assert docker_steps[: len(readme_steps)] == readme_steps


def test_the_readme_kv_section_names_every_registered_press() -> None:
    from promptshrink.kv import press_names

    section = (ROOT / "README.md").read_text().split("## KV-cache compression (GPU)", 1)[1].split("\n## ", 1)[0]
    missing = [name for name in press_names() if f"`{name}`" not in section]
    assert not missing, f"README's KV section does not name {missing}"


def test_python_blocks_are_ruff_formatted() -> None:
    """As `ruff format` writes them, with the project's settings (the docs' code is code like the rest)."""
    unformatted = []
    for b in ALL:
        if b.lang != "python":
            continue
        command = [sys.executable, "-m", "ruff", "format", "--stdin-filename", "block.py", "-"]
        done = subprocess.run(command, input=b.code, cwd=ROOT, capture_output=True, text=True, check=True)
        if done.stdout != b.code:
            unformatted.append(b.id)
    assert not unformatted, f"run ruff format on these python blocks: {unformatted}"


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`promptshrink serve` on its embedded default, as the README's first command starts it."""
    exe = shutil.which("promptshrink", path=str(Path(sys.executable).parent)) or shutil.which("promptshrink")
    assert exe, "the promptshrink command is not installed"
    proc = subprocess.Popen(
        [exe, "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path_factory.mktemp("serve"),
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    log: list[str] = []
    try:
        url = announced_url(proc, log)
        wait_ready(url, timeout=240)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def run_block(block: Block, cwd: Path, url: str | None = None) -> subprocess.CompletedProcess[str]:
    code = block.code.replace(DEFAULT_URL, url) if url else block.code
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [sys.executable, "-c", code] if block.lang == "python" else ["bash", "-euo", "pipefail", "-c", code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("block", [b for b in ALL if b.kind != "ci"], ids=lambda b: b.id)
def test_block_runs_as_written(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if block.kind in SKIPPED:
        pytest.skip(f"needs a {block.kind}; covered by {block.note}")
    if block.lang in DATA:
        if block.lang == "json":
            json.loads(block.code)
        else:
            import yaml

            yaml.safe_load(block.code)
        return
    url = request.getfixturevalue("default_server") if block.kind == "server" else None
    done = run_block(block, tmp_path, url)
    assert done.returncode == 0, f"{block.id} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
