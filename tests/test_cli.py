"""The command line, run as a user would: a real subprocess, real files, real exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "promptshrink.cli", *args], input=stdin, capture_output=True, timeout=300
    )


def test_compress_file_to_json(tmp_path, article):
    path = tmp_path / "in.txt"
    path.write_text(article)
    out = run_cli("compress", str(path), "--method", "tfidf", "--rate", "0.5", "--json", "--segments")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["method"] == "tfidf" and 0.4 <= data["ratio"] <= 0.5
    assert data["segments"] and {"text", "score", "kept"} <= set(data["segments"][0])


def test_compress_stdin_with_target_tokens_and_summary_on_stderr():
    text = b"One sentence about cats. Another about dogs. A third about birds and their songs."
    out = run_cli("compress", "-", "-m", "keep_first", "-t", "5", "--tokenizer", "o200k_base", stdin=text)
    assert out.returncode == 0 and b"-> " in out.stderr
    kept = out.stdout.decode().strip()
    assert kept and text.decode().startswith(kept)
    from promptshrink import get_tokenizer

    assert get_tokenizer("o200k_base").count(kept) <= 5


def test_methods_lists_json():
    out = run_cli("methods", "--json")
    names = {m["name"] for m in json.loads(out.stdout)}
    assert {"selective_context", "keep_first", "tfidf"} <= names


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["compress", "-", "--rate", "0"], b"text", b"rate must be in (0, 1]"),
        (["compress", "-", "--rate", "2"], b"text", b"rate must be in (0, 1]"),
        (["compress", "-", "--target-tokens", "0"], b"text", b"target_tokens must be > 0"),
        (["compress", "-"], b"   ", b"text is empty"),
        (["compress", "-", "-m", "nope"], b"text", b"unknown method 'nope'"),
        (["compress", "-", "--tokenizer", "nope"], b"text", b"unknown tokenizer"),
        (["compress", "-", "-m", "tfidf"], b"caf\xe9 \xff", b"not valid UTF-8"),
        (["compress", "/no/such/file"], None, b"cannot read"),
        (["compress", "-", "-m", "tfidf", "-o", "unit=lines"], b"text here", b"unit must be one of"),
        (["compress", "-", "-m", "tfidf", "-o", "colour=1"], b"text here", b"bad options"),
    ],
)
def test_errors_exit_nonzero_without_traceback(args, stdin, message):
    out = run_cli(*args, stdin=stdin)
    assert out.returncode == 2
    assert message in out.stderr
    assert b"Traceback" not in out.stderr
