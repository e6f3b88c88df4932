"""Starvation benchmark: a small model-free request while two large LM requests run into the request timeout.

    python -m benchmarks.starvation                      # starts `promptshrink serve` on a free loopback port
    python -m benchmarks.starvation --rounds 5 --timeout 10 --big-chars 1000000

Each round sends two large `selective_context` texts (50 ms apart: two jobs, so both compression threads are busy)
and, one second later, a small `tfidf` text (54 K characters, as in issue 20). It reports the small request's
status and latency (and its latency on an idle server), the large requests' statuses and latencies (504 expected
at the timeout), how long after their 504 the compression slots stay held (the worker thread is still working)
and the server CPU seconds spent after the 504s. Writes benchmarks/results/starvation.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

from .load_test import wait_ready

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "starvation.json"
SENTENCE = "The committee reviewed budget line {i} and found that spending on item {i} rose by {j} percent. "


def text(chars: int, salt: int) -> str:
    out = "".join(SENTENCE.format(i=i, j=(i + salt) % 13) for i in range(chars // len(SENTENCE) + 1))
    return out[:chars]


def start_server(timeout_s: float) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PROMPTSHRINK_METHODS": "selective_context,tfidf",
        "PROMPTSHRINK_REQUEST_TIMEOUT_S": str(timeout_s),
        "PROMPTSHRINK_COMPRESS_THREADS": "2",
        "PROMPTSHRINK_MAX_BODY_BYTES": str(8 << 20),
    }
    cmd = [sys.executable, "-m", "promptshrink.cli", "serve", "--port", str(port), "--method", "selective_context"]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, cwd=ROOT)
    return proc, wait_ready(proc, f"http://127.0.0.1:{port}", 300)  # with the models' warm-up


def slots_used(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=30).text
    found = re.search(r"^promptshrink_queue_slots_used (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else float("nan")


def post(url: str, body: dict, out: dict) -> None:
    start = time.monotonic()
    try:
        out["status"] = httpx.post(f"{url}/v1/compress", json=body, timeout=900).status_code
    except httpx.HTTPError as exc:
        out["status"] = type(exc).__name__
    out["seconds"], out["ended"] = time.monotonic() - start, time.monotonic()


def one_round(url: str, cpu: psutil.Process, big_chars: int, small: str, salt: int, wait_s: float) -> dict:
    bigs = [{} for _ in range(2)]
    threads = []
    for k, out in enumerate(bigs):
        body = {"text": text(big_chars, salt + k), "rate": 0.5}
        threads.append(threading.Thread(target=post, args=(url, body, out)))
        threads[-1].start()
        time.sleep(0.05)
    time.sleep(1.0)
    small_out: dict = {}
    post(url, {"text": small, "method": "tfidf", "rate": 0.5}, small_out)
    for thread in threads:
        thread.join()
    ended, cpu_at_end = time.monotonic(), cpu.cpu_times()
    while slots_used(url) > 0 and time.monotonic() - ended < wait_s:
        time.sleep(0.2)
    held = time.monotonic() - ended
    after = cpu.cpu_times()
    return {
        "small_status": small_out["status"],
        "small_ms": round(small_out["seconds"] * 1000, 1),
        "big_status": [b["status"] for b in bigs],
        "big_s": [round(b["seconds"], 2) for b in bigs],
        "slots_held_after_s": round(held, 2),
        "slots_freed": held < wait_s,
        "server_cpu_after_s": round(after.user + after.system - cpu_at_end.user - cpu_at_end.system, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0, help="the server's request timeout (s)")
    parser.add_argument("--big-chars", type=int, default=1_000_000, help="characters of each large request")
    parser.add_argument("--wait", type=float, default=300.0, help="longest wait for the slots to free (s)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    small = text(54_000, 0)
    proc, url = start_server(args.timeout)
    try:
        cpu = psutil.Process(proc.pid)
        idle: dict = {}
        post(url, {"text": small, "method": "tfidf", "rate": 0.5}, idle)
        rounds = [one_round(url, cpu, args.big_chars, small, 100 * r, args.wait) for r in range(args.rounds)]
    finally:
        proc.terminate()
        proc.wait(30)
    report = {
        "timeout_s": args.timeout,
        "big_chars": args.big_chars,
        "small_chars": len(small),
        "small_idle_ms": round(idle["seconds"] * 1000, 1),
        "rounds": rounds,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "load_average_1m": os.getloadavg()[0],
    }
    print(f"small tfidf request on an idle server: {report['small_idle_ms']} ms; request timeout {args.timeout} s")
    head = ("round", "small", "small_ms", "big", "big_s", "held_after_504_s", "cpu_after_504_s")
    print("".join(f"{h:>18}" for h in head))
    for i, r in enumerate(rounds):
        cells = (i, r["small_status"], r["small_ms"], r["big_status"], r["big_s"])
        cells += (r["slots_held_after_s"], r["server_cpu_after_s"])
        print("".join(f"{c!s:>18}" for c in cells))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(r["small_status"] == 200 and r["slots_freed"] for r in rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
