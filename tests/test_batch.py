"""`promptshrink batch` in this process (no Ray), run as a user would (a subprocess, real files, exit codes): kill -9
at random moments never loses or repeats a record; a file that is not the job's output is refused untouched;
records holding U+2028, U+2029 or U+0085 resume; ids compare as JSON values; duplicates are reported on every run;
each exit status (0, 1, 2) comes with a one-line message. The Ray Data path is tested in tests/service/test_ray.py."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from promptshrink.batch import KEY_FIELD, BatchSpec, compress_record, record_key
from tests.support.texts import LONG_TEXT

JOB = ["-m", "keep_first", "-r", "0.5"]
SPEC = BatchSpec(method="keep_first", rate=0.5)


def marker_path(out: Path) -> Path:
    """The job marker beside an output (docs/batch.md)."""
    return out.with_name(out.name + ".promptshrink-batch.json")


SENTENCES = [s.strip() + "." for s in LONG_TEXT.split(".") if s.strip()]


def batch(source: Path, out: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "promptshrink.cli", "batch", str(source), str(out), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def start(source: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "promptshrink.cli", "batch", str(source), str(out), *JOB, "--quiet"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def read_lines(out: Path) -> list[dict[str, Any]]:
    data = out.read_bytes()
    assert not data or data.endswith(b"\n"), "the output ends in a partial line"
    return [json.loads(line) for line in data.decode("utf-8").split("\n")[:-1]]


def lines_in(out: Path) -> int:
    return out.read_bytes().count(b"\n") if out.exists() else 0


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The stderr of a run that must end with exit status 2 and a one-line message (no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    return result.stderr


def corpus(n: int) -> list[Any]:
    """Good records of every kind (text, chat, passages; with int, string and no ids; line separators inside),
    and bad ones (no content, a wrong type, a repeated id)."""
    records: list[Any] = []
    for i in range(n):
        text = " ".join(SENTENCES[(i * 3) % len(SENTENCES) :][:6]) or SENTENCES[0]
        kind = i % 6
        if kind == 0:
            records.append({"id": i, "text": text})
        elif kind == 1:
            records.append({"id": str(i - 1), "text": text})  # "0" next to 0: a different record
        elif kind == 2:
            records.append({"text": f"{text}\u2028{text}\u2029 and\u0085 more"})
        elif kind == 3:
            records.append({"id": f"chat-{i}", "messages": [{"role": "user", "content": text}]})
        elif kind == 4:
            records.append({"id": f"rag-{i}", "passages": [text, text[::-1]], "question": "why?"})
        else:
            records.append({"id": f"big-{i}", "text": " ".join([text] * 40)})
    records[7] = {"id": "no-content", "title": "nothing to compress"}
    records[11] = {"id": "wrong-type", "text": 42}
    records[13] = {"id": 12, "text": "a repeated id"}
    return records


def expected_output(records: list[Any]) -> dict[str, dict[str, Any]]:
    """The output record of each good record, by key, computed in this process."""
    expected = {}
    seen = set()
    for number, record in enumerate(records, 1):
        key = record_key(number, json.dumps(record, ensure_ascii=False))
        if key in seen:
            continue
        seen.add(key)
        try:
            expected[key] = {**compress_record(record, SPEC), KEY_FIELD: key}
        except Exception:
            continue
    return expected


def _kill_round(source: Path, out: Path, seed: int, full_run_s: float, expected: dict[str, Any]) -> int:
    """Five kill -9 of the job on ``out`` then a run to completion, checked; returns how many kills landed while
    records were being written."""
    rng = random.Random(seed)
    interrupted = 0
    for kill in range(5):
        before = lines_in(out)
        job = start(source, out)
        if kill % 2:  # anywhere: starting, claiming the output, dropping a cut line, compressing, writing
            time.sleep(rng.uniform(0, full_run_s))
        else:  # while records are being written
            deadline = time.monotonic() + 60
            while job.poll() is None and lines_in(out) <= before and time.monotonic() < deadline:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))
        job.send_signal(signal.SIGKILL)
        job.wait(timeout=60)
        interrupted += job.returncode == -signal.SIGKILL and 0 < lines_in(out) < len(expected)
    final = batch(source, out, *JOB)
    assert final.returncode == 1, final.stderr  # finished, with the bad records listed
    lines = read_lines(out)
    keys = [line[KEY_FIELD] for line in lines]
    assert len(keys) == len(set(keys)), "a record was written twice"
    assert {line[KEY_FIELD]: line for line in lines} == expected
    failed = [json.loads(x) for x in out.with_name(out.name + ".failed.jsonl").read_text().splitlines()]
    assert [(f["line"], f["code"]) for f in failed] == [
        (8, "invalid_input"),
        (12, "invalid_input"),
        (14, "duplicate_id"),
    ]
    return interrupted


def test_kill_9_at_random_moments_never_loses_or_repeats_a_record(tmp_path: Path) -> None:
    """Five rounds (run side by side) of five kill -9 at random moments, each round ending with a run to
    completion: every good record is in the output exactly once, as it was compressed, in a file of whole lines;
    the bad ones are reported."""
    records = corpus(150)
    source = write_jsonl(tmp_path / "in.jsonl", records)
    expected = expected_output(records)
    began = time.perf_counter()
    clean = batch(source, tmp_path / "clean.jsonl", *JOB)
    full_run_s = time.perf_counter() - began
    assert clean.returncode == 1, clean.stderr
    assert {r[KEY_FIELD]: r for r in read_lines(tmp_path / "clean.jsonl")} == expected
    with ThreadPoolExecutor(5) as pool:
        rounds = [
            pool.submit(_kill_round, source, tmp_path / f"out-{seed}.jsonl", seed, full_run_s, expected)
            for seed in range(5)
        ]
        interrupted = sum(r.result() for r in rounds)
    print(f"{interrupted} of 25 kills landed while records were being written; a full run takes {full_run_s:.2f} s")
    assert interrupted >= 10, f"only {interrupted} of 25 kills landed while records were being written"


def test_a_resume_never_rewrites_the_output_in_place(tmp_path: Path) -> None:
    """A last line cut short is dropped without the complete lines ever leaving the file: watched while the resume
    runs, the output is never shorter than its complete lines (the old resume truncated it, then wrote it again;
    a kill -9 then left 0 bytes of an 809 MB output)."""
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": LONG_TEXT[: 200 + i]} for i in range(3)])
    out = tmp_path / "out.jsonl"
    assert batch(source, out, *JOB).returncode == 0
    filler = "".join(
        json.dumps({"id": f"old-{i}", "text": LONG_TEXT[:2000], KEY_FIELD: f'id:"old-{i}"'}) + "\n"
        for i in range(20000)
    )
    with out.open("a", encoding="utf-8") as f:
        f.write(filler + '{"id": "cut", "text": "a line cut sho')
    complete = out.stat().st_size - len('{"id": "cut", "text": "a line cut sho')
    job = start(source, out)
    smallest = complete
    while job.poll() is None:
        try:
            smallest = min(smallest, out.stat().st_size)
        except FileNotFoundError:  # the old rewrite never removed the file: only a rename could be seen mid-way
            continue
        if smallest < complete:
            job.send_signal(signal.SIGKILL)  # what a kill at that moment keeps
            job.wait()
            break
    assert smallest >= complete, f"the output shrank to {smallest} of {complete} bytes of complete lines"
    assert job.wait(timeout=120) == 0
    keys = [line[KEY_FIELD] for line in read_lines(out)]
    assert len(keys) == len(set(keys)) == 20003


def test_a_file_that_is_not_its_output_is_refused_untouched(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "small.jsonl", [{"id": 1, "text": LONG_TEXT[:300]}])
    for name, content in [
        ("notes.txt", b"x"),
        ("partial.txt", b"hello\npartial"),
        ("old.jsonl", b'{"id": 1, "text": "x", "record_key": "id:1"}\n'),  # looks like an output, has no marker
    ]:
        path = tmp_path / name
        path.write_bytes(content)
        message = one_line_error(batch(source, path, "--method", "keep_first"))
        assert "not the output of a promptshrink batch job" in message
        assert path.read_bytes() == content
        assert not marker_path(path).exists() and not (tmp_path / f"{name}.failed.jsonl").exists()
    # an empty file (say from mktemp) holds nothing to lose: it is adopted
    (tmp_path / "empty.jsonl").touch()
    assert batch(source, tmp_path / "empty.jsonl", *JOB).returncode == 0
    assert [r["id"] for r in read_lines(tmp_path / "empty.jsonl")] == [1]


def test_a_resume_with_other_settings_or_a_second_job_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": LONG_TEXT[:300]}])
    out = tmp_path / "out.jsonl"
    assert batch(source, out, *JOB).returncode == 0
    before = out.read_bytes()
    assert "was written with" in one_line_error(batch(source, out, "-m", "keep_first", "-r", "0.9"))
    import fcntl

    with open(marker_path(out)) as marker:
        fcntl.flock(marker, fcntl.LOCK_EX)  # as a running job holds it
        assert "another promptshrink batch job" in one_line_error(batch(source, out, *JOB))
    assert out.read_bytes() == before


def test_line_and_paragraph_separators_round_trip_and_resume(tmp_path: Path) -> None:
    text = "a\u2028b. Some sentence here.\u0085 Another\u2029 one there."
    source = write_jsonl(tmp_path / "u.jsonl", [{"id": 1, "text": text}, {"text": "no id\u2028here. And more."}])
    out = tmp_path / "o.jsonl"
    first = batch(source, out, "-m", "keep_first", "-r", "0.9", "--json", "--quiet")
    assert first.returncode == 0, first.stderr
    written = read_lines(out)
    assert written[0]["text"] == compress_record({"id": 1, "text": text}, BatchSpec("keep_first", 0.9))["text"]
    assert "\u2028" in written[0]["text"] and "\u2028" in written[1]["text"]
    again = batch(source, out, "-m", "keep_first", "-r", "0.9", "--json", "--quiet")
    assert again.returncode == 0, again.stderr  # was: "o.jsonl has a line that this job did not write"
    summary = json.loads(again.stdout)
    assert (summary["skipped"], summary["written"]) == (2, 0)
    assert read_lines(out) == written


def test_ids_compare_as_json_values_and_duplicates_are_reported_on_every_run(tmp_path: Path) -> None:
    records = [
        {"id": 1, "text": "One sentence about cats. Another one."},
        {"id": "1", "text": "A sentence about dogs. Another one."},
        {"id": 2, "text": "Birds sing. They fly."},
        {"id": 2, "text": "A repeated id."},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    for run in range(2):
        result = batch(source, out, *JOB, "--json", "--quiet")
        assert result.returncode == 1, result.stderr  # some records failed
        summary = json.loads(result.stdout)
        assert [(f["line"], f["code"]) for f in summary["failed"]] == [(4, "duplicate_id")]
        assert (summary["written"], summary["skipped"]) == ((3, 0) if run == 0 else (0, 3))
    assert sorted(json.dumps(r["id"]) for r in read_lines(out)) == ['"1"', "1", "2"]


def test_exit_statuses_and_their_one_line_messages(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "Fine text. More of it."}])
    done = batch(source, tmp_path / "out.jsonl", *JOB)
    assert done.returncode == 0 and "1 compressed" in done.stderr
    (tmp_path / "file").write_text("x")
    for unwritable in (tmp_path / "file" / "out.jsonl", tmp_path / "missing-dir" / "out.jsonl"):
        assert "cannot use" in one_line_error(batch(source, unwritable, *JOB))
    assert "does not exist" in one_line_error(batch(tmp_path / "nope.jsonl", tmp_path / "o2.jsonl", *JOB))
    assert "need --ray" in one_line_error(batch(source, tmp_path / "o3.jsonl", *JOB, "--workers", "2"))
    assert "unknown" in one_line_error(batch(source, tmp_path / "o4.jsonl", "-m", "nope")).lower()
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": 1, "text": 42}])
    failed = batch(bad, tmp_path / "o5.jsonl", *JOB)
    assert failed.returncode == 1 and "1 failed" in failed.stderr


def test_a_partial_last_line_is_dropped_and_recompressed(tmp_path: Path) -> None:
    records = [{"id": i, "text": LONG_TEXT[i * 100 : i * 100 + 400]} for i in range(6)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out.jsonl"
    assert batch(source, out, *JOB).returncode == 0
    complete = out.read_bytes()
    lines = complete.split(b"\n")
    out.write_bytes(b"\n".join(lines[:3]) + b"\n" + lines[3][:25])  # killed mid-line
    assert batch(source, out, *JOB).returncode == 0
    assert sorted(out.read_bytes().split(b"\n")) == sorted(complete.split(b"\n"))
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    # a line this job did not write (say an edit): refused before anything changes, the cut line included
    tampered = complete + b"an edited line\n" + lines[0][:10]
    out.write_bytes(tampered)
    assert "was not written by this job" in one_line_error(batch(source, out, *JOB))
    assert out.read_bytes() == tampered


def test_the_marker_says_what_the_job_is(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "in.jsonl", [{"id": 1, "text": "Fine text. More of it."}])
    out = tmp_path / "out.jsonl"
    assert batch(source, out, *JOB).returncode == 0
    marker = json.loads(marker_path(out).read_text())
    assert marker["format"] == "promptshrink-batch/1" and marker["output"] == "out.jsonl"
    assert marker["job"]["method"] == "keep_first" and marker["job"]["rate"] == 0.5
    assert oct(out.stat().st_mode & 0o777) == oct(marker_path(out).stat().st_mode & 0o777)
    before = out.read_bytes(), marker_path(out).stat().st_ino
    assert batch(source, out, *JOB).returncode == 0  # a resume leaves both alone
    assert (out.read_bytes(), marker_path(out).stat().st_ino) == before
