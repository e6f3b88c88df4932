"""Offline compression of a corpus with Ray Data: `promptshrink batch IN OUT --method ... --rate ...`.

Input is JSONL or Parquet; each record holds ``text``, ``messages`` (chat) or ``passages`` (RAG), and other fields
travel through unchanged. The driver reads the input and appends each compressed record to ``OUT`` (JSONL) as soon
as it is done; Ray Data spreads the compression over a pool of actors that load the method's models once each.
A record's identity is its ``id`` field when it has one, else its line (row) number and a hash of its content, so a
rerun skips the records already in ``OUT`` (resume after an interruption) and recomputes lines whose content
changed. A bad record never stops the job: it is reported with its reason in the summary and in
``OUT.failed.jsonl``, and retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError, PromptShrinkError
from .pipeline import compress_text
from .registry import get_compressor, get_method
from .request import CompressOptions
from .structured import messages_with, passages_with
from .target_tokenizer import DEFAULT_TOKENIZER, get_tokenizer

CONTENT_FIELDS = ("text", "messages", "passages")
KEY_FIELD = "record_key"


@dataclass(frozen=True)
class BatchSpec:
    """How every record is compressed (the arguments of `promptshrink.compress`, shared by all records)."""

    method: str
    rate: float | None = None
    target_tokens: int | None = None
    tokenizer: str = DEFAULT_TOKENIZER
    question_field: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def compress_options(self, question: str | None = None) -> CompressOptions:
        """The library options of a record with ``question``."""
        return CompressOptions(
            method=self.method,
            rate=self.rate,
            target_tokens=self.target_tokens,
            tokenizer=self.tokenizer,
            question=question,
            options=self.options,
        )

    def check(self) -> None:
        """Fail before any work starts on a bad method, budget or tokenizer."""
        get_method(self.compress_options().method_name)
        get_tokenizer(self.tokenizer)


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


def compress_record(record: Any, spec: BatchSpec) -> dict[str, Any]:
    """The output record for one input record: its fields, the content compressed, and token counts.

    Raises `PromptShrinkError` for a record that cannot be compressed.
    """
    if not isinstance(record, dict):
        raise InvalidInputError(f"a record must be a JSON object, got {type(record).__name__}")
    present = [f for f in CONTENT_FIELDS if record.get(f) is not None]
    if len(present) != 1:
        raise InvalidInputError(
            f"a record needs exactly one of {', '.join(CONTENT_FIELDS)}; it has {present or 'none'}"
        )
    options = spec.compress_options(record.get(spec.question_field) if spec.question_field else None)
    content = present[0]
    out = dict(record)
    if content == "text":
        result = compress_text(record["text"], options)
        out["text"] = result.text
        tokens = result.original_tokens, result.compressed_tokens
    elif content == "messages":
        mres = messages_with(record["messages"], options)
        out["messages"] = mres.messages
        tokens = mres.original_tokens, mres.compressed_tokens
    else:
        pres = passages_with(record["passages"], options)
        out["passages"] = pres.passages
        tokens = pres.original_tokens, pres.compressed_tokens
    out.update(method=spec.method, original_tokens=tokens[0], compressed_tokens=tokens[1])
    out["ratio"] = tokens[1] / tokens[0] if tokens[0] else 1.0
    return out


def read_input(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line or row number from 1, the record as a JSON string) for each JSONL line (blank lines skipped) or
    Parquet row. A JSONL line that is not valid JSON is passed on as it is (it fails as a record); one that is
    not valid UTF-8 comes as None."""
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(path).iter_batches():
            for row in batch.to_pylist():
                number += 1
                yield number, json.dumps(row, ensure_ascii=False, default=str)
        return
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            try:
                yield number, raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                yield number, None


def record_key(number: int, line: str) -> str:
    """The record's identity: ``id:<id>`` when it is an object with a string or integer ``id``, else
    ``line:<number>:<content hash>``."""
    try:
        record = json.loads(line)
    except ValueError:
        record = None
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)) and not isinstance(record["id"], bool):
        return f"id:{record['id']}"
    return f"line:{number}:{hashlib.sha256(line.encode()).hexdigest()[:16]}"


def written_keys(out: Path) -> set[str]:
    """The keys already in ``out``; a last line cut short by an interrupted run is removed first."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        out.write_bytes(data)
    keys = set()
    for line in data.decode("utf-8").splitlines():
        try:
            keys.add(json.loads(line)[KEY_FIELD])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{out} has a line that this job did not write ({exc}); use a new output") from exc
    return keys


class _Worker:
    """A Ray Data actor: loads the method's models once, then compresses batches of records."""

    def __init__(self, spec: BatchSpec) -> None:
        self.spec = spec
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
        for number, key, line in zip(batch["number"], batch["key"], batch["line"]):
            output, error, tokens = self._one(str(key), line)
            for name, value in zip(columns, (int(number), str(key), output, error, *tokens)):
                columns[name].append(value)
        return columns

    def _one(self, key: str, line: str) -> tuple[str, str, tuple[int, int]]:
        """(output JSON line, "") or ("", error JSON) for one record, and its tokens in and out."""
        try:
            record = json.loads(line)
        except ValueError as exc:
            return "", json.dumps({"code": "invalid_json", "message": f"not valid JSON: {exc}"}), (0, 0)
        try:
            out = compress_record(record, self.spec)
            out[KEY_FIELD] = key
            return json.dumps(out, ensure_ascii=False), "", (out["original_tokens"], out["compressed_tokens"])
        except PromptShrinkError as exc:
            return "", json.dumps({"code": exc.code, "message": str(exc)}), (0, 0)
        except Exception as exc:  # a bug on one record must not stop the corpus: report it with the record
            return "", json.dumps({"code": "internal_error", "message": f"{type(exc).__name__}: {exc}"}), (0, 0)


def run_batch(
    source: Path,
    out: Path,
    spec: BatchSpec,
    *,
    ray_address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    batch_size: int = 16,
    progress: Callable[[BatchSummary], None] | None = None,
) -> BatchSummary:
    """Compress every record of ``source`` not yet in ``out``, appending results to ``out`` as they finish.

    Runs on the Ray cluster at ``ray_address`` (``auto``: the one this machine belongs to), else on the Ray
    instance this process already started, else on a new local one. ``workers`` defaults to the cluster's CPUs
    divided by ``cpus_per_worker``. ``progress`` is called after each record with the running summary.
    """
    import ray

    spec.check()
    if not source.is_file():
        raise InvalidInputError(f"input {source} does not exist")
    started = time.perf_counter()
    summary = BatchSummary()
    done = written_keys(out)
    pending: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for number, line in read_input(source):
        summary.records += 1
        if line is None:
            message = "the line is not valid UTF-8"
            summary.failed.append({"line": number, "key": f"line:{number}", "code": "invalid_utf8", "message": message})
            continue
        key = record_key(number, line)
        if key in done:
            summary.skipped += 1
        elif key in first_line:
            message = f"duplicate {key} (first at line {first_line[key]})"
            summary.failed.append({"line": number, "key": key, "code": "duplicate_id", "message": message})
        else:
            first_line[key] = number
            pending.append({"number": number, "key": key, "line": line})

    failed_path = out.with_name(out.name + ".failed.jsonl")
    if pending:
        if not ray.is_initialized():
            ray.init(address=ray_address, log_to_driver=False, logging_level="warning")
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        if workers is None:
            workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))
        results = ray.data.from_items(pending).map_batches(
            _Worker,
            fn_constructor_kwargs={"spec": spec},
            batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=min(workers, len(pending))),
            num_cpus=cpus_per_worker,
            num_gpus=gpus_per_worker,
        )
        if progress:
            progress(summary)
        with out.open("a", encoding="utf-8") as sink:
            for row in results.iter_rows():
                if row["error"]:
                    summary.failed.append({"line": row["number"], "key": row["key"], **json.loads(row["error"])})
                else:
                    sink.write(row["output"] + "\n")
                    sink.flush()
                    summary.written += 1
                    summary.tokens_in += row["original_tokens"]
                    summary.tokens_out += row["compressed_tokens"]
                if progress:
                    summary.elapsed_s = time.perf_counter() - started
                    progress(summary)
    summary.failed.sort(key=lambda f: f["line"])
    if summary.failed:
        failed_path.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in summary.failed))
    else:
        failed_path.unlink(missing_ok=True)
    summary.elapsed_s = time.perf_counter() - started
    return summary
