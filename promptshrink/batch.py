"""Offline compression of a corpus: `promptshrink batch IN OUT --method ... --rate ...` (docs/batch.md).

Input is JSONL or Parquet; each record holds ``text``, ``messages`` (chat) or ``passages`` (RAG), and other fields
travel through unchanged. The driver reads the input and appends each compressed record to ``OUT`` (JSONL) as soon
as it is done, in this process or (``ray=True``) in a pool of Ray Data actors that load the method's models once
each. A record's identity is its ``id`` (compared as a JSON value: ``1`` and ``"1"`` differ) when it has one, else
its line (row) number and a hash of its content, so a rerun skips the records already in ``OUT`` (resume after an
interruption) and recomputes lines whose content changed. A bad record never stops the job: it is reported with
its reason in the summary and in ``OUT.failed.jsonl``, and retried on the next run.

``OUT`` is only ever appended to (`BatchOutput`): a job marker beside it says it is this job's output, anything
else is refused untouched, and a last line cut short by a kill is dropped by writing a copy and renaming it over.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError, PromptShrinkError
from .model_loading import DEVICE_ENV
from .pipeline import compress_text, compress_texts
from .registry import get_compressor, get_method
from .request import CompressOptions
from .result import CompressionResult
from .structured import messages_with, passages_with
from .target_tokenizer import DEFAULT_TOKENIZER, get_tokenizer

try:
    import fcntl
except ImportError:  # Windows: no lock against a second job on the same output
    fcntl = None  # type: ignore[assignment]

CONTENT_FIELDS = ("text", "messages", "passages")
KEY_FIELD = "record_key"
MARKER_SUFFIX = ".promptshrink-batch.json"
MARKER_FORMAT = "promptshrink-batch/1"
FSYNC_EVERY_S = 1.0  # appended records reach the OS at once (a kill loses none); the disk at least this often
JSON_WHITESPACE = " \t\r\n"


class BatchOutputError(PromptShrinkError):
    """The output cannot be used: not this job's, written with other settings, busy, or an I/O error."""

    code = "output_error"


@dataclass(frozen=True)
class BatchSpec:
    """How every record is compressed (the arguments of `promptshrink.compress`, shared by all records)."""

    method: str
    rate: float | None = None
    target_tokens: int | None = None
    tokenizer: str = DEFAULT_TOKENIZER
    question_field: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def compress_options(self, question: str | None = None, device: str | None = None) -> CompressOptions:
        """The library options of a record with ``question``, run on ``device`` (None: `resolve_device`'s)."""
        return CompressOptions(
            method=self.method,
            rate=self.rate,
            target_tokens=self.target_tokens,
            tokenizer=self.tokenizer,
            question=question,
            options=self.options,
            device=device,
        )

    def check(self) -> None:
        """Fail before any work starts on a bad method, budget or tokenizer."""
        get_method(self.compress_options().method_name)
        get_tokenizer(self.tokenizer)

    def settings(self) -> dict[str, Any]:
        """What the job marker records: a resume must compress with the same settings."""
        return json.loads(json.dumps(asdict(self), sort_keys=True, default=str))


@dataclass
class BatchSummary:
    """What a run did: records seen, skipped as already written, written, failed (with reasons), tokens."""

    records: int = 0
    skipped: int = 0
    written: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    elapsed_s: float = 0.0

    @property
    def records_per_s(self) -> float:
        done = self.written + len(self.failed)
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "records_per_s": self.records_per_s}


def compress_record(record: Any, spec: BatchSpec, device: str | None = None) -> dict[str, Any]:
    """The output record for one input record: its fields, the content compressed (on ``device``), token counts.

    Raises `PromptShrinkError` for a record that cannot be compressed.
    """
    if not isinstance(record, dict):
        raise InvalidInputError(f"a record must be a JSON object, got {type(record).__name__}")
    present = [f for f in CONTENT_FIELDS if record.get(f) is not None]
    if len(present) != 1:
        raise InvalidInputError(
            f"a record needs exactly one of {', '.join(CONTENT_FIELDS)}; it has {present or 'none'}"
        )
    options = spec.compress_options(record.get(spec.question_field) if spec.question_field else None, device)
    content = present[0]
    if content == "text":
        return _output(record, spec, "text", compress_text(record["text"], options))
    if content == "messages":
        mres = messages_with(record["messages"], options)
        return _output(record, spec, "messages", mres.messages, (mres.original_tokens, mres.compressed_tokens))
    pres = passages_with(record["passages"], options)
    return _output(record, spec, "passages", pres.passages, (pres.original_tokens, pres.compressed_tokens))


def _output(
    record: dict[str, Any], spec: BatchSpec, content: str, value: Any, tokens: tuple[int, int] | None = None
) -> dict[str, Any]:
    """``record`` with its ``content`` field replaced by ``value`` (a `CompressionResult` for text) and counts."""
    if isinstance(value, CompressionResult):
        value, tokens = value.text, (value.original_tokens, value.compressed_tokens)
    assert tokens is not None
    out = dict(record)
    out[content] = value
    out.update(method=spec.method, original_tokens=tokens[0], compressed_tokens=tokens[1])
    out["ratio"] = tokens[1] / tokens[0] if tokens[0] else 1.0
    return out


def read_input(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line or row number from 1, the record as a JSON string) for each JSONL line (blank lines skipped) or
    Parquet row. Lines end only at ``\\n`` (U+2028, U+2029 and U+0085 are text). A JSONL line that is not valid
    JSON is passed on as it is (it fails as a record); one that is not valid UTF-8 comes as None."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            number = 0
            for batch in pq.ParquetFile(path).iter_batches():
                for row in batch.to_pylist():
                    number += 1
                    yield number, json.dumps(row, ensure_ascii=False, default=str)
            return
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, 1):  # a binary file splits on b"\n" only
                if not raw.strip(JSON_WHITESPACE.encode()):
                    continue
                try:
                    yield number, raw.decode("utf-8").strip(JSON_WHITESPACE)
                except UnicodeDecodeError:
                    yield number, None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def record_key(number: int, line: str) -> str:
    """The record's identity: ``id:<id as JSON>`` when it is an object with a string or integer ``id`` (so
    ``id:1`` and ``id:"1"`` differ), else ``line:<number>:<content hash>``."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)) and not isinstance(record["id"], bool):
        return "id:" + json.dumps(record["id"], ensure_ascii=False)
    return f"line:{number}:{hashlib.sha256(line.encode()).hexdigest()[:16]}"


def marker_path(out: Path) -> Path:
    """The job marker beside ``out``: it says that ``out`` is a batch output, and with which settings."""
    return out.with_name(out.name + MARKER_SUFFIX)


def failed_path(out: Path) -> Path:
    return out.with_name(out.name + ".failed.jsonl")


def _fsync_dir(folder: Path) -> None:
    if os.name != "posix":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, chunks: Iterator[bytes]) -> None:
    """Write ``chunks`` to a temporary file beside ``path``, sync it and rename it over ``path``: a reader (or a
    kill at any moment) sees the old file or the new one, never a mix or a truncated file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else _new_file_mode())
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _new_file_mode() -> int:
    """The mode `open` gives a new file (0o666 less the umask), for files made by `tempfile.mkstemp` (0o600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _prefix(path: Path, size: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        while size > 0 and (block := f.read(min(size, 1 << 20))):
            size -= len(block)
            yield block


class BatchOutput:
    """The output of one batch job, appended to and never rewritten in place.

    `open` claims ``out`` (a new path, or an empty file, gets a job marker first), refuses a file that has no
    marker or whose marker records other settings without touching it, takes a lock against a second job,
    drops a last line cut short (a copy renamed over ``out``) and returns the keys already written. `append`
    writes one whole line per call.
    """

    def __init__(self, out: Path, spec: BatchSpec) -> None:
        self.path = out
        self.marker = marker_path(out)
        self.settings = spec.settings()
        self._lock: int | None = None
        self._fd: int | None = None
        self._synced = 0.0

    def open(self) -> set[str]:
        try:
            self._claim()
            self._take_lock()
            for name in (self.path.name, failed_path(self.path).name):  # temporary files left by a kill
                for stale in self.path.parent.glob(f".{name}.tmp-*"):
                    stale.unlink(missing_ok=True)
            size = self._complete_size()
            keys = self._keys(size)  # before anything changes: a file with a line not of this job stays as it is
            if self.path.exists() and size < self.path.stat().st_size:
                write_atomically(self.path, _prefix(self.path, size))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            return keys
        except OSError as exc:
            self.close()
            raise BatchOutputError(f"cannot use {self.path}: {exc.strerror or exc}") from exc
        except BaseException:
            self.close()
            raise

    def _claim(self) -> None:
        if self.path.exists() and not self.path.is_file():
            raise BatchOutputError(f"{self.path} is not a regular file")
        if self.marker.exists():
            try:
                marker = json.loads(self.marker.read_text(encoding="utf-8"))
                recorded = marker["job"] if marker.get("format") == MARKER_FORMAT else None
            except (ValueError, KeyError, TypeError, AttributeError):
                recorded = None
            if recorded is None:
                raise BatchOutputError(f"{self.marker} is not a promptshrink batch marker; use a new output path")
            if recorded != self.settings:
                raise BatchOutputError(
                    f"{self.path} was written with {json.dumps(recorded, sort_keys=True)}; this run asks for "
                    f"{json.dumps(self.settings, sort_keys=True)}: rerun with those settings or use a new output path"
                )
            return
        foreign = [p for p in (self.path, failed_path(self.path)) if p.exists() and p.stat().st_size > 0]
        if foreign:
            raise BatchOutputError(
                f"{foreign[0]} exists and is not the output of a promptshrink batch job (no {self.marker.name} beside "
                "it); refusing to touch it: use a new output path"
            )
        body = {"format": MARKER_FORMAT, "output": self.path.name, "job": self.settings}
        write_atomically(self.marker, iter([json.dumps(body, indent=1).encode() + b"\n"]))

    def _take_lock(self) -> None:
        """An exclusive lock on the marker (never replaced once written): one job per output at a time."""
        self._lock = os.open(self.marker, os.O_RDONLY)
        if fcntl is None:
            return
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise BatchOutputError(f"another promptshrink batch job is writing {self.path}") from exc

    def _complete_size(self) -> int:
        """Bytes of ``out`` up to its last ``\\n`` (what follows was cut short by an interrupted run)."""
        if not self.path.exists():
            return 0
        size = self.path.stat().st_size
        with self.path.open("rb") as f:
            end = size
            while end > 0:
                start = max(0, end - (1 << 16))
                f.seek(start)
                block = f.read(end - start)
                cut = block.rfind(b"\n")
                if cut >= 0:
                    return start + cut + 1
                end = start
        return 0

    def _keys(self, size: int) -> set[str]:
        """The record keys of the first ``size`` bytes (whole lines) of ``out``."""
        keys: set[str] = set()
        if not size:
            return keys
        with self.path.open("rb") as lines:
            for number, raw in enumerate(lines, 1):
                size -= len(raw)
                if size < 0:
                    break
                try:
                    keys.add(json.loads(raw.decode("utf-8"))[KEY_FIELD])
                except (ValueError, KeyError, TypeError) as exc:
                    raise BatchOutputError(
                        f"{self.path} line {number} was not written by this job ({exc}); use a new output path"
                    ) from exc
        return keys

    def append(self, line: str) -> None:
        """Write one record line (with its ``\\n``) at the end; synced to disk at most every `FSYNC_EVERY_S`."""
        assert self._fd is not None, "open() first"
        data = memoryview((line + "\n").encode("utf-8"))
        try:
            while data:
                data = data[os.write(self._fd, data) :]
            if time.monotonic() - self._synced >= FSYNC_EVERY_S:
                os.fsync(self._fd)
                self._synced = time.monotonic()
        except OSError as exc:
            raise BatchOutputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def write_failures(self, failed: list[dict[str, Any]]) -> None:
        """``OUT.failed.jsonl``: this run's failures (replaced atomically), removed when there are none."""
        path = failed_path(self.path)
        try:
            if failed:
                write_atomically(path, (json.dumps(f, ensure_ascii=False).encode() + b"\n" for f in failed))
            else:
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise BatchOutputError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        """Sync and close the output, then release the lock."""
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                os.fsync(fd)
                os.close(fd)
        finally:
            lock, self._lock = self._lock, None
            if lock is not None:
                os.close(lock)


Line = tuple[str, str, tuple[int, int]]


def _line_of(key: str, out: dict[str, Any]) -> Line:
    out[KEY_FIELD] = key
    return json.dumps(out, ensure_ascii=False), "", (out["original_tokens"], out["compressed_tokens"])


def compress_line(key: str, line: str, spec: BatchSpec, device: str | None = None) -> Line:
    """(output JSON line, "") or ("", error JSON) for one input line, and its tokens in and out."""
    try:
        record = json.loads(line)
    except ValueError as exc:
        return "", json.dumps({"code": "invalid_json", "message": f"not valid JSON: {exc}"}), (0, 0)
    try:
        return _line_of(key, compress_record(record, spec, device))
    except PromptShrinkError as exc:
        return "", json.dumps({"code": exc.code, "message": str(exc)}), (0, 0)
    except Exception as exc:  # a bug on one record must not stop the corpus: report it with the record
        return "", json.dumps({"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}), (0, 0)


def compress_lines(items: list[tuple[str, str]], spec: BatchSpec, device: str | None = None) -> list[Line]:
    """`compress_line` of each (key, line), with the plain-text records compressed together by `compress_texts`
    (their LM passes share padded batches: one GPU call for many records; each result equals one by one). If the
    group fails, its records are compressed one by one, so that each gets its own result or error."""
    results: list[Line | None] = [None] * len(items)
    group: list[tuple[int, dict[str, Any], str | None]] = []
    for i, (key, line) in enumerate(items):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        question = record.get(spec.question_field) if spec.question_field and isinstance(record, dict) else None
        plain = isinstance(record, dict) and isinstance(record.get("text"), str)
        if plain and all(record.get(f) is None for f in CONTENT_FIELDS[1:]) and isinstance(question, (str, type(None))):
            group.append((i, record, question))
        else:
            results[i] = compress_line(key, line, spec, device)
    if group:
        try:
            texts = [record["text"] for _, record, _ in group]
            done = compress_texts(texts, spec.compress_options(device=device), [q for _, _, q in group])
        except Exception:  # one bad record (or a failed batch): each one alone, with its own error
            done = None
        for n, (i, record, _) in enumerate(group):
            key, line = items[i]
            results[i] = (
                compress_line(key, line, spec, device)
                if done is None
                else _line_of(key, _output(record, spec, "text", done[n]))
            )
    return [r for r in results if r is not None]


class _Worker:
    """A Ray Data actor: loads the method's models once, then compresses batches of records (`compress_lines`)
    on ``device`` (None: `resolve_device`'s choice in the actor, which sees the GPUs Ray gave it)."""

    def __init__(self, spec: BatchSpec, device: str | None = None) -> None:
        self.spec, self.device = spec, device
        get_compressor(spec.method, **spec.options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        columns: dict[str, list[Any]] = {
            "number": [],
            "key": [],
            "output": [],
            "error": [],
            "original_tokens": [],
            "compressed_tokens": [],
        }
        items = [(str(key), line) for key, line in zip(batch["key"], batch["line"])]
        for number, (key, _), (output, error, tokens) in zip(
            batch["number"], items, compress_lines(items, self.spec, self.device)
        ):
            for name, value in zip(columns, (int(number), key, output, error, *tokens)):
                columns[name].append(value)
        return columns


def _plan(source: Path, done: set[str], summary: BatchSummary) -> list[dict[str, Any]]:
    """The records of ``source`` still to compress; counts the skipped ones and reports bad or repeated ones."""
    pending: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for number, line in read_input(source):
        summary.records += 1
        if line is None:
            message = "the line is not valid UTF-8"
            summary.failed.append({"line": number, "key": f"line:{number}", "code": "invalid_utf8", "message": message})
            continue
        key = record_key(number, line)
        if key in first_line:  # reported on every run, also once the first one is written
            message = f"duplicate {key} (first at line {first_line[key]})"
            summary.failed.append({"line": number, "key": key, "code": "duplicate_id", "message": message})
            continue
        first_line[key] = number
        if key in done:
            summary.skipped += 1
        else:
            pending.append({"number": number, "key": key, "line": line})
    return pending


def _ray_rows(
    pending: list[dict[str, Any]],
    spec: BatchSpec,
    ray_address: str | None,
    workers: int | None,
    cpus_per_worker: float,
    gpus_per_worker: float,
    batch_size: int,
    device: str | None,
) -> Iterator[dict[str, Any]]:
    """The result rows of ``pending`` compressed by a pool of Ray Data actors, in completion order."""
    try:
        import ray
    except ImportError as exc:
        raise InvalidInputError(f"--ray needs its extras: pip install 'promptshrink[ray]' ({exc})") from exc
    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False, logging_level="warning")
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))
    results = ray.data.from_items(pending).map_batches(
        _Worker,
        fn_constructor_kwargs={"spec": spec, "device": device},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=min(workers, len(pending))),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
    )
    yield from results.iter_rows()


def _local_rows(pending: list[dict[str, Any]], spec: BatchSpec, device: str | None) -> Iterator[dict[str, Any]]:
    """The result rows of ``pending`` compressed one by one in this process."""
    get_compressor(spec.method, **spec.options)
    for item in pending:
        output, error, (tokens_in, tokens_out) = compress_line(item["key"], item["line"], spec, device)
        yield {"number": item["number"], "key": item["key"], "output": output, "error": error} | {
            "original_tokens": tokens_in,
            "compressed_tokens": tokens_out,
        }


def run_batch(
    source: Path,
    out: Path,
    spec: BatchSpec,
    *,
    ray: bool = False,
    ray_address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    batch_size: int = 16,
    device: str | None = None,
    progress: Callable[[BatchSummary], None] | None = None,
) -> BatchSummary:
    """Compress every record of ``source`` not yet in ``out``, appending results to ``out`` as they finish.

    In this process, one record after another; with ``ray``, on Ray Data actors: on the Ray cluster at
    ``ray_address`` (``auto``: the one this machine belongs to), else on the Ray instance this process already
    started, else on a new local one, with ``workers`` actors (default: the cluster's CPUs divided by
    ``cpus_per_worker``), each compressing ``batch_size`` records at a time. The LM-scored methods run on
    ``device`` (default ``$PROMPTSHRINK_DEVICE`` of this process, else ``auto``); on Ray, ``cuda`` needs
    ``gpus_per_worker`` > 0 (Ray gives each actor its GPU, which it sees as ``cuda``). ``progress`` is called after
    each record with the running summary. Raises `BatchOutputError` when ``out`` is not this job's output or
    cannot be written (see `BatchOutput`).
    """
    if not ray and (ray_address is not None or workers is not None or cpus_per_worker != 1.0 or gpus_per_worker):
        raise InvalidInputError("ray_address, workers, cpus_per_worker and gpus_per_worker need ray=True (--ray)")
    device = device or os.environ.get(DEVICE_ENV) or None  # the driver's setting reaches the actors
    if ray and device and device.startswith("cuda"):
        if gpus_per_worker <= 0:
            raise InvalidInputError(
                f"device {device!r} on Ray needs gpus_per_worker > 0 (--gpus-per-worker, e.g. 0.5 for two actors a "
                "GPU): Ray places actors on GPUs by it"
            )
        if device != "cuda":
            raise InvalidInputError(f"device {device!r}: Ray picks each actor's GPU, use 'cuda'")
    spec.check()
    if not source.is_file():
        raise InvalidInputError(f"input {source} does not exist")
    started = time.perf_counter()
    summary = BatchSummary()
    output = BatchOutput(out, spec)
    done = output.open()
    try:
        pending = _plan(source, done, summary)
        if pending:
            if ray:
                rows = _ray_rows(
                    pending, spec, ray_address, workers, cpus_per_worker, gpus_per_worker, batch_size, device
                )
            else:
                rows = _local_rows(pending, spec, device)
            if progress:
                progress(summary)
            for row in rows:
                if row["error"]:
                    summary.failed.append({"line": row["number"], "key": row["key"], **json.loads(row["error"])})
                else:
                    output.append(row["output"])
                    summary.written += 1
                    summary.tokens_in += row["original_tokens"]
                    summary.tokens_out += row["compressed_tokens"]
                if progress:
                    summary.elapsed_s = time.perf_counter() - started
                    progress(summary)
        summary.failed.sort(key=lambda f: f["line"])
        output.write_failures(summary.failed)
    finally:
        output.close()
    summary.elapsed_s = time.perf_counter() - started
    return summary
