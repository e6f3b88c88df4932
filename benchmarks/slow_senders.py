"""Slow senders against `promptshrink serve` with its default timeouts: when does the server close each connection?

    python benchmarks/slow_senders.py

Opens 3 slow-header connections (a request line, then one header byte per second), 3 slow-body ones (headers
announcing 100 KB, then one body byte per second) and 2 idle ones (nothing sent), as in issue 20, and reports
after how many seconds the server closed each (or that it was still open after ``--wait`` seconds). Writes
benchmarks/results/slow_senders.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "slow_senders.json"
OPENERS = {
    "slow_header": b"POST /v1/compress HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    "slow_body": b"POST /v1/compress HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
    b"content-length: 100000\r\n\r\n",
    "idle": b"",
}


def closed_after(port: int, kind: str, wait: float) -> float | None:
    """Seconds until the server closed the connection (None: still open after ``wait``)."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(1.0)
    start = time.monotonic()
    sock.sendall(OPENERS[kind])
    try:
        while time.monotonic() - start < wait:
            try:
                if not sock.recv(4096):
                    return time.monotonic() - start
            except TimeoutError:
                pass
            if kind != "idle":
                sock.send(b"a")
    except OSError:
        return time.monotonic() - start
    finally:
        sock.close()
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wait", type=float, default=90.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTSHRINK_WARMUP": "0"}
    cmd = [sys.executable, "-m", "promptshrink.cli", "serve", "--port", str(port), "--method", "keep_first"]
    proc = subprocess.Popen([*cmd, "--log-level", "warning"], env=env, cwd=ROOT)
    results: dict[str, float | None] = {}
    try:
        time.sleep(15)  # start-up
        kinds = [(k, i) for k, n in (("slow_header", 3), ("slow_body", 3), ("idle", 2)) for i in range(n)]

        def run(kind: str, i: int) -> None:
            results[f"{kind}_{i}"] = closed_after(port, kind, args.wait)

        threads = [threading.Thread(target=run, args=kind) for kind in kinds]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        proc.terminate()
        proc.wait(30)
    for name, seconds in sorted(results.items()):
        print(f"{name:<14}" + (f"open after {args.wait:g} s" if seconds is None else f"closed after {seconds:.1f} s"))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"closed_after_s": results, "wait_s": args.wait}, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(v is not None for v in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
