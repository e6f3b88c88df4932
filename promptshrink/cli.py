"""Command line: `promptshrink compress|methods|calibrate-ehpc|serve`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .errors import InvalidInputError, PromptShrinkError

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


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"--option expects key=value, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


class _Progress:
    """Writes 'scoring 3/7' on stderr for long inputs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, done: int, total: int) -> None:
        if self.enabled and total > 1:
            end = "\n" if done == total else ""
            print(f"\rscoring {done}/{total}", end=end, file=sys.stderr, flush=True)


def _compress(args: argparse.Namespace) -> int:
    from .api import compress

    text = _read_input(args.file)
    result = compress(
        text,
        args.method,
        rate=args.rate,
        target_tokens=args.target_tokens,
        tokenizer=args.tokenizer,
        question=args.question,
        keep=args.keep or [],
        protect_numbers=args.protect_numbers,
        seed=args.seed,
        progress=_Progress(not args.quiet and (args.progress or sys.stderr.isatty())),
        **_parse_options(args.option or []),
    )
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


def _serve(args: argparse.Namespace) -> int:
    try:
        from .service.server import run
    except ImportError as exc:
        raise InvalidInputError(f"the service needs its extras: pip install 'promptshrink[service]' ({exc})") from exc
    run(host=args.host, port=args.port, workers=args.workers, method=args.method, log_level=args.log_level)
    return 0


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
    c.add_argument("--method", "-m", default="selective_context")
    budget = c.add_mutually_exclusive_group()
    budget.add_argument("--rate", "-r", type=float, help="kept fraction of target tokens, in (0, 1]")
    budget.add_argument("--target-tokens", "-t", type=int, help="most tokens to keep, in the target tokenizer")
    c.add_argument("--tokenizer", default="cl100k_base", help="tiktoken encoding, OpenAI model or hf:<model>")
    c.add_argument("--question", "-q", help="question the compressed context must answer")
    c.add_argument("--keep", "-k", action="append", help="a string that must survive (repeatable)")
    c.add_argument("--protect-numbers", action="store_true", help="never drop numbers")
    c.add_argument("--seed", type=int, default=0)
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
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=_serve)
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
