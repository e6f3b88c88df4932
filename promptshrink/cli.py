"""Command line: `promptshrink compress|methods|calibrate-ehpc|serve|batch`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Collection
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from .errors import InvalidInputError, PromptShrinkError
from .params import parse_options
from .request import DEFAULT_METHOD, CompressOptions

EXIT_USAGE = 2


def _read_input(source: str) -> str:
    try:
        data = sys.stdin.buffer.read() if source == "-" else open(source, "rb").read()  # noqa: SIM115
    except OSError as exc:
        raise InvalidInputError(f"cannot read {source!r}: {exc.strerror}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(
            f"input is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); convert it first, "
            "e.g. iconv -f latin1 -t utf-8"
        ) from exc


class _Progress:
    """Writes 'scoring 3/7' on stderr for long inputs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, done: int, total: int) -> None:
        if self.enabled and total > 1:
            end = "\n" if done == total else ""
            print(f"\rscoring {done}/{total}", end=end, file=sys.stderr, flush=True)


def add_option_flags(
    parser: argparse.ArgumentParser, only: Collection[str] | None = None, cls: type[CompressOptions] = CompressOptions
) -> None:
    """A flag per field of ``cls`` (`CompressOptions`; ``only`` those named), from its type and ``metadata``:
    ``--<name-with-dashes>`` plus the ``cli`` short names, help from ``doc``, budget flags mutually exclusive."""
    hints = get_type_hints(cls)
    groups: dict[Any, Any] = {}
    for f in dataclasses.fields(cls):
        names = f.metadata.get("cli", ())
        if names is False or (only is not None and f.name not in only):
            continue
        hint = hints[f.name]
        kind = next((a for a in get_args(hint) if a is not type(None)), hint) if get_origin(hint) else hint
        default = None if f.default is dataclasses.MISSING else f.default
        kw: dict[str, Any] = {"dest": f.name, "help": f.metadata["doc"] + (f" (default: {default})" if default else "")}
        if kind is bool:
            kw.update(action="store_true")
        elif get_origin(hint) is tuple:
            kw.update(action="append", help=kw["help"] + " (repeatable)")
        else:
            kw.update(type=kind, default=default)
        group = f.metadata.get("group")
        if group is not None and group not in groups:
            groups[group] = parser.add_mutually_exclusive_group()
        target = parser if group is None else groups[group]
        target.add_argument("--" + f.name.replace("_", "-"), *names, **kw)
    parser.set_defaults(method=DEFAULT_METHOD)


def options_from(args: argparse.Namespace, cls: type[CompressOptions] = CompressOptions, **more: Any) -> Any:
    """The ``cls`` of the parsed flags (those not given keep the field's default) and the ``--option`` pairs."""
    flags = [f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", ()) is not False]
    given = {name: getattr(args, name) for name in flags if getattr(args, name, None) is not None}
    return cls(**given, options=parse_options(getattr(args, "option", None) or []), **more)


def _compress(args: argparse.Namespace) -> int:
    from .pipeline import compress_text

    text = _read_input(args.file)
    progress = _Progress(not args.quiet and (args.progress or sys.stderr.isatty()))
    result = compress_text(text, options_from(args, progress=progress))
    if args.json:
        print(json.dumps(result.to_dict(include_segments=args.segments), ensure_ascii=False, indent=2))
    else:
        sys.stdout.write(result.text + "\n")
        if not args.quiet:
            print(
                f"{result.method}: {result.original_tokens} -> {result.compressed_tokens} {result.tokenizer} tokens "
                f"(kept {result.ratio:.1%}) in {result.timings.get('total_s', 0):.2f}s",
                file=sys.stderr,
            )
    return 0


def _methods(args: argparse.Namespace) -> int:
    from .registry import describe_methods

    described = describe_methods()
    if args.json:
        print(json.dumps(described, indent=2, default=str))
        return 0
    for m in described:
        params = ", ".join(f"{p['name']}={p['default']!r}" for p in m["parameters"])
        kind = "extractive" if m["extractive"] else "generative"
        print(f"{m['name']:<22} {kind:<11} {m['summary']}\n{'':<34}params: {params}")
    return 0


def _missing_subpackage(exc: ImportError, extras: str) -> InvalidInputError:
    """The error for a failed import of ``promptshrink.service`` (or ``.clients``, ``.kernels``): a plain
    checkout (the folders are mapped into the package only by an install) or a missing extra."""
    name = (exc.name or "").split(".")
    checkout = Path(__file__).resolve().parent.parent
    if name[:1] == ["promptshrink"] and len(name) > 1 and (checkout / name[1] / "__init__.py").exists():
        return InvalidInputError(
            f"{checkout} is a plain checkout: its {name[1]}/ folder becomes promptshrink.{name[1]} only when the "
            f"package is installed (pyproject.toml, [tool.setuptools.package-dir]); run "
            f"pip install -e '.[{extras}]' in {checkout}, then promptshrink serve (or python -m promptshrink.cli serve)"
        )
    return InvalidInputError(f"this needs its extras: pip install 'promptshrink[{extras}]' ({exc})")


def _serve(args: argparse.Namespace) -> int:
    if args.ray:
        return _serve_ray(args)
    try:
        from .service.server import run
    except ImportError as exc:
        raise _missing_subpackage(exc, "service") from exc
    run(host=args.host, port=args.port, workers=args.workers, method=args.method, log_level=args.log_level)
    return 0


def _serve_ray(args: argparse.Namespace) -> int:
    if args.workers is not None:
        raise InvalidInputError("--workers starts uvicorn processes; with --ray use --replicas")
    try:
        from .service.config import Settings
        from .service.ray_app import run
    except ImportError as exc:
        raise _missing_subpackage(exc, "service,ray") from exc
    overrides = {"host": args.host, "port": args.port, "method": args.method, "log_level": args.log_level}
    run(Settings.from_env(**overrides, ray_address=args.ray_address, ray_replicas=args.replicas))
    return 0


class _BatchProgress:
    """A progress bar over the records of a batch job, with tokens in and out."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        self.enabled = enabled

    def __call__(self, summary: Any) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            try:
                from tqdm import tqdm
            except ImportError:  # the bar comes with the `ray` extra; the summary is printed without it
                self.enabled = False
                return
            self.bar = tqdm(total=summary.records - summary.skipped, unit="rec", file=sys.stderr)
        self.bar.update(summary.written + len(summary.failed) - self.bar.n)
        self.bar.set_postfix(tokens=f"{summary.tokens_in}->{summary.tokens_out}", failed=len(summary.failed))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _batch(args: argparse.Namespace) -> int:
    """Exit status 0: every record done; 1: some records failed (listed); 2: usage or I/O error (one line)."""
    from .batch import BatchSpec, run_batch

    spec = BatchSpec(
        method=args.method,
        rate=args.rate,
        target_tokens=args.target_tokens,
        tokenizer=args.tokenizer,
        question_field=args.question_field,
        options=parse_options(args.option or []),
    )
    ray_options = {
        "ray_address": args.ray_address,
        "workers": args.workers,
        "cpus_per_worker": args.cpus_per_worker,
        "gpus_per_worker": args.gpus_per_worker,
    }
    if not args.ray:
        given = [f"--{k.replace('_', '-')}" for k, v in ray_options.items() if v is not None]
        if given:
            raise InvalidInputError(f"{', '.join(given)} need --ray (the Ray Data path)")
    bar = _BatchProgress(not args.quiet and (args.progress or sys.stderr.isatty()))
    try:
        summary = run_batch(
            Path(args.input),
            Path(args.output),
            spec,
            ray=args.ray,
            **{k: v for k, v in ray_options.items() if v is not None},
            device=args.device,
            progress=bar,
        )
    except OSError as exc:  # not a traceback: an I/O error is a usage error (exit 2) with a one-line message
        name = f" {exc.filename}" if exc.filename else ""
        raise InvalidInputError(f"I/O error{name}: {exc.strerror or exc}") from exc
    finally:
        bar.close()
    if args.json:
        print(json.dumps(summary.to_dict(), ensure_ascii=False, indent=2))
    if not args.quiet:
        saved = 1 - summary.tokens_out / summary.tokens_in if summary.tokens_in else 0.0
        print(
            f"{summary.records} records: {summary.written} compressed, {summary.skipped} already in {args.output}, "
            f"{len(summary.failed)} failed; tokens {summary.tokens_in} -> {summary.tokens_out} ({saved:.1%} saved) "
            f"in {summary.elapsed_s:.1f}s ({summary.records_per_s:.1f} records/s)",
            file=sys.stderr,
        )
        for f in summary.failed[:10]:
            print(f"  line {f['line']}: {f['code']}: {f['message']}", file=sys.stderr)
        if summary.failed:
            print(f"  all failures: {args.output}.failed.jsonl", file=sys.stderr)
    return 1 if summary.failed else 0


def _calibrate_ehpc(args: argparse.Namespace) -> int:
    from .scoring.evaluator_heads import calibrate, save

    result = calibrate(args.model, probes=args.probes, top_k=args.top_k, seed=args.seed)
    path = save(result)
    print(
        f"{result['model_id']}: evaluator heads {result['heads']} (deepest layer {result['deepest_layer']}) -> {path}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptshrink", description="Prompt compression for LLM calls.")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="compress a file or standard input")
    c.add_argument("file", help="path to a UTF-8 text file, or - for standard input")
    add_option_flags(c)  # one flag per field of CompressOptions
    c.add_argument("--option", "-o", action="append", help="method option key=value (repeatable)")
    c.add_argument("--json", action="store_true", help="print the full result as JSON")
    c.add_argument("--segments", action="store_true", help="with --json: include per-segment decisions")
    c.add_argument("--progress", action="store_true", help="show progress even when stderr is not a terminal")
    c.add_argument("--quiet", action="store_true", help="no summary or progress on stderr")
    c.set_defaults(func=_compress)

    m = sub.add_parser("methods", help="list the compression methods and their parameters")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_methods)

    e = sub.add_parser("calibrate-ehpc", help="find the evaluator heads of a causal LM (for the ehpc method)")
    e.add_argument("--model", default="default-lm", help="model alias, local path or Hugging Face id")
    e.add_argument("--probes", type=int, default=12, help="needle-in-a-haystack probes")
    e.add_argument("--top-k", type=int, default=8, help="heads to keep")
    e.add_argument("--seed", type=int, default=0)
    e.set_defaults(func=_calibrate_ehpc)

    s = sub.add_parser("serve", help="run the REST service")
    s.add_argument("--host", default=None, help="default $PROMPTSHRINK_HOST or 127.0.0.1")
    s.add_argument("--port", type=int, default=None, help="default $PROMPTSHRINK_PORT or 8000")
    s.add_argument("--workers", type=int, default=None, help="uvicorn worker processes")
    s.add_argument("--method", default=None, help="default compression method")
    s.add_argument("--log-level", default=None, help="default $PROMPTSHRINK_LOG_LEVEL or info")
    s.add_argument("--ray", action="store_true", help="serve on Ray Serve (replicas, autoscaling: PROMPTSHRINK_RAY_*)")
    s.add_argument(
        "--replicas", type=int, default=None, help="with --ray: replicas (default $PROMPTSHRINK_RAY_REPLICAS)"
    )
    s.add_argument("--ray-address", default=None, help="with --ray: join this Ray cluster (default: start one)")
    s.set_defaults(func=_serve)

    b = sub.add_parser(
        "batch",
        help="compress a JSONL or Parquet corpus (resumable; --ray: on Ray Data)",
        description="Exit status: 0 every record done, 1 some records failed (listed), 2 usage or I/O error. "
        "See docs/batch.md.",
    )
    b.add_argument("input", help="JSONL or .parquet file of records with text, messages or passages")
    b.add_argument("output", help="JSONL file the compressed records are appended to (rerun to resume)")
    add_option_flags(b, only=("method", "rate", "target_tokens", "tokenizer"))
    b.add_argument("--question-field", "-q", help="record field holding the question (question-aware methods)")
    b.add_argument("--option", "-o", action="append", help="method option key=value (repeatable)")
    b.add_argument("--ray", action="store_true", help="compress on Ray Data actors (default: in this process)")
    b.add_argument(
        "--ray-address", default=None, help="with --ray: the cluster ('auto': this machine's); default: local"
    )
    b.add_argument("--workers", type=int, default=None, help="with --ray: actors (default: CPUs / cpus-per-worker)")
    b.add_argument("--cpus-per-worker", type=float, default=None, help="with --ray (default 1)")
    b.add_argument("--gpus-per-worker", type=float, default=None, help="with --ray (default 0)")
    b.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default $PROMPTSHRINK_DEVICE or auto)")
    b.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    b.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    b.add_argument("--quiet", action="store_true", help="no progress bar or summary on stderr")
    b.set_defaults(func=_batch)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # One OpenMP thread per spare core, set before torch loads: oversubscribed threads spin (10x slower measured).
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) - 1)))
    try:
        return args.func(args)
    except PromptShrinkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
