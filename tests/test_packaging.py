"""Packaging and layout: one import name, a light client, no import cycles, every module importable alone.

The wheel test builds the real wheel, installs it into a fresh virtualenv (no system packages) and checks what a
user gets: only ``promptshrink*`` top-level names, no torch/transformers pulled, the same module paths as the
editable install, and the client answering through a real server.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import promptshrink
from tests.support import ROOT
from tests.support.servers import ServerThread, base_settings, wait_ready

SUBPACKAGE_FOLDERS = {
    "promptshrink.service": "service",
    "promptshrink.clients": "clients",
    "promptshrink.kernels": "kernels",
}


def source_modules() -> dict[str, Path]:
    """Every module of the distribution, by dotted name, mapped to its file in this checkout."""
    roots = {"promptshrink": ROOT / "promptshrink", **{k: ROOT / v for k, v in SUBPACKAGE_FOLDERS.items()}}
    out = {}
    for package, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([package, *parts])] = path
    return out


def _module_level_imports(module: str, path: Path) -> set[str]:
    """Modules imported when ``module`` is executed: top-level imports, not those in functions or TYPE_CHECKING."""
    tree = ast.parse(path.read_text())
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, (ast.If, ast.Try)):
                visit(node.body)
                visit(node.orelse)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = source_modules()
    return {
        name: {m for m in _module_level_imports(name, path) if m in modules and m != name}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)):
            return cycle
    return None


def test_cycle_finder_reports_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_imports_alone() -> None:
    """Each module in a fresh interpreter: no module depends on another having been imported first."""
    triton = importlib.util.find_spec("triton") is not None
    names = [n for n in source_modules() if triton or not n.startswith("promptshrink.kernels.")]

    def run(name: str) -> tuple[str, int, str]:
        proc = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, cwd=ROOT)
        return name, proc.returncode, proc.stderr[-800:]

    with ThreadPoolExecutor(4) as pool:
        failures = [(n, err) for n, rc, err in pool.map(run, names) if rc]
    assert not failures, failures


def test_subpackages_map_to_the_repository_folders() -> None:
    for name, folder in SUBPACKAGE_FOLDERS.items():
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None
        assert Path(spec.origin).resolve() == (ROOT / folder / "__init__.py").resolve()
    for top in ("service", "clients", "kernels"):
        found = subprocess.run(
            [sys.executable, "-c", f"import importlib.util,sys; sys.exit(importlib.util.find_spec({top!r}) is None)"],
            cwd="/",
        )
        assert found.returncode == 1, f"{top!r} is importable as a top-level name"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (path,) = out.glob("promptshrink-*.whl")
    return path


def test_wheel_has_one_import_name_and_the_bundled_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"promptshrink"}
    for required in (
        "promptshrink/service/app.py",
        "promptshrink/clients/client.py",
        "promptshrink/kernels/chunk_select.py",
        "promptshrink/_bundled_models/manifest.json",
        "promptshrink/_bundled_models/tiktoken/cl100k_base.tiktoken",
    ):
        assert required in names
    wheel_modules = {
        n[: -len(".py")].replace("/", ".").removesuffix(".__init__")
        for n in names
        if n.endswith(".py") and not n.startswith("promptshrink/_bundled_models")
    }
    assert wheel_modules == set(source_modules())


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Path:
    """A fresh virtualenv (no system site-packages) with only the wheel and its base dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    proc = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True,
        text=True,
    )
    if proc.returncode:
        pytest.fail(f"pip install of the wheel failed: {proc.stderr[-2000:]}")
    return python


def test_base_install_pulls_no_torch(light_venv: Path) -> None:
    listing = subprocess.run(
        [str(light_venv), "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    installed = {p["name"].lower() for p in json.loads(listing)}
    assert "promptshrink" in installed and "httpx" in installed
    assert not installed & {"torch", "transformers", "accelerate", "gguf", "fastapi"}


def test_light_client_and_model_free_methods_work_through_a_real_server(light_venv: Path, upstream) -> None:
    script = """
import sys, promptshrink
from promptshrink.clients import PromptShrinkClient
text = "The first sentence is short. The treaty was signed in 1648 in Westphalia. Nothing else matters here."
with PromptShrinkClient(sys.argv[1]) as client:
    remote = client.compress(text, "tfidf", rate=0.5, question="When was the treaty signed?")
local = promptshrink.compress(text, "tfidf", rate=0.5, question="When was the treaty signed?")
assert isinstance(remote, promptshrink.CompressionResult), type(remote)
assert remote.text == local.text, (remote.text, local.text)
try:
    promptshrink.compress(text, "selective_context", rate=0.5)
except promptshrink.ModelUnavailableError as exc:
    assert "promptshrink[lm]" in str(exc)
else:
    raise AssertionError("selective_context ran without torch")
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
assert not heavy, heavy
print("ok")
"""
    from promptshrink.service import create_app

    with ServerThread(create_app(base_settings(upstream, method="tfidf"))) as server:
        wait_ready(server.url)
        proc = subprocess.run([str(light_venv), "-c", script, server.url], capture_output=True, text=True, cwd="/")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_describe_methods_is_not_shadowing_the_methods_subpackage() -> None:
    import promptshrink.methods as methods_package

    assert methods_package.__name__ == "promptshrink.methods"
    assert {m["name"] for m in promptshrink.describe_methods()} >= {"tfidf", "selective_context"}
