"""Load test for the promptshrink service: N concurrent /v1/compress requests, bounded by the server's queue.

    python benchmarks/load_test.py                    # starts `promptshrink serve` on a free loopback port
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --requests 500 --concurrency 100

Prints throughput, latency percentiles, the error count and the CPU time the server and this client spent per
request (on a shared machine, CPU per request is the figure that does not depend on the other load: the
server's capacity is about cores / server CPU per request), and writes benchmarks/results/load_test.json.
Exits 1 if any request failed while the concurrency stayed within the server's queue limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "load_test.json"
QUESTION = "Which region had revenue of 105 million dollars?"


def report_text(paragraphs: int = 43) -> str:
    """The synthetic quarterly report: ~34 cl100k tokens a paragraph (43: ~1.5K tokens, the issue's report)."""
    return " ".join(
        f"Paragraph {i}: the quarterly report for region {i % 7} shows revenue of {100 + i} million dollars, "
        f"driven by strong demand, while costs rose slightly because of logistics and hiring."
        for i in range(paragraphs)
    )


def text_of(tokens: int) -> str:
    """The report with as many paragraphs as make at least ``tokens`` cl100k tokens (the default tokenizer)."""
    from promptshrink.target_tokenizer import get_tokenizer

    count = get_tokenizer().count
    paragraphs = max(1, tokens // 40)
    while count(report_text(paragraphs)) < tokens:
        paragraphs += 1
    return report_text(paragraphs)


TEXT = report_text()


class Connection:
    """One keep-alive HTTP/1.1 connection that POSTs JSON and reads the status line and body.

    A minimal client on purpose: the load generator runs on the same cores as the server, and httpx spends as much
    CPU per request (~5 ms) as the server does, so it would measure the client. Errors are reported by name.
    """

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, path: str, body: bytes) -> int:
        if self.streams is None:
            self.streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.streams
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = int((await reader.readline()).split()[1])
        length, close = 0, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and value.strip().lower() == "close":
                close = True
        await reader.readexactly(length)
        if close:
            writer.close()
            self.streams = None
        return status


async def one(connection: Connection, body: bytes) -> tuple[float, int | str]:
    """Latency and HTTP status, or the name of the transport error."""
    start = time.perf_counter()
    status: int | str
    try:
        status = await connection.post("/v1/compress", body)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
        connection.streams = None
        status = type(exc).__name__
    return time.perf_counter() - start, status


def server_cpu_s(proc: subprocess.Popen[bytes] | None) -> float | None:
    """CPU seconds used so far by the server this script started and its worker processes."""
    if proc is None:
        return None
    import psutil

    root = psutil.Process(proc.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def load(
    url: str,
    requests: int,
    concurrency: int,
    method: str,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    text: str = TEXT,
    question: str | None = None,
    max_s: float | None = None,
) -> dict[str, object]:
    """``requests`` POSTs of ``text`` (with ``question`` if given), ``concurrency`` at a time; with ``max_s``, the
    requests not started ``max_s`` seconds after the first are skipped (``requests`` counts those sent)."""
    fields: dict[str, object] = {"text": text, "method": method, "rate": 0.5}
    if question is not None:
        fields["question"] = question
    body = json.dumps(fields).encode()
    connections = [Connection(url) for _ in range(concurrency)]
    queue: asyncio.Queue[Connection] = asyncio.Queue()
    for c in connections:
        queue.put_nowait(c)

    async def bounded() -> tuple[float, int | str] | None:
        connection = await queue.get()
        if max_s is not None and time.perf_counter() - start > max_s:
            queue.put_nowait(connection)
            return None
        try:
            return await one(connection, body)
        finally:
            queue.put_nowait(connection)

    await asyncio.gather(*(one(c, body) for c in connections))  # warm connections, workers
    server_before, client_before = server_cpu_s(proc), time.process_time()
    start = time.perf_counter()
    results = [r for r in await asyncio.gather(*(bounded() for _ in range(requests))) if r is not None]
    wall = time.perf_counter() - start
    skipped, requests = requests - len(results), len(results)
    server_after, client_cpu = server_cpu_s(proc), time.process_time() - client_before
    for c in connections:
        if c.streams is not None:
            c.streams[1].close()
    latencies = sorted(lat for lat, _ in results)
    statuses = Counter(status for _, status in results)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1000

    return {
        "method": method,
        "requests": requests,
        "skipped": skipped,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "throughput_rps": round(requests / wall, 1),
        "p50_ms": round(pct(50), 1),
        "p90_ms": round(pct(90), 1),
        "p99_ms": round(pct(99), 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "ok": statuses.get(200, 0),
        "errors": requests - statuses.get(200, 0),
        "statuses": {str(k): v for k, v in sorted(statuses.items(), key=lambda kv: str(kv[0]))},
        "server_cpu_ms_per_request": None
        if server_before is None or server_after is None
        else round((server_after - server_before) / requests * 1000, 2),
        "client_cpu_ms_per_request": round(client_cpu / requests * 1000, 2),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def start_server(
    max_queue: int,
    workers: int = 1,
    method: str = "keep_first",
    extra_env: dict[str, str] | None = None,
    ready_s: float = 60,
) -> tuple[subprocess.Popen[bytes], str]:
    """`promptshrink serve` on a free loopback port, without warm-up, with ``extra_env`` added to this environment."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # an installed copy too
    env = {**os.environ, "PYTHONPATH": path, "PROMPTSHRINK_MAX_QUEUE": str(max_queue), "PROMPTSHRINK_WARMUP": "0"}
    env |= extra_env or {}
    cmd = [sys.executable, "-m", "promptshrink.cli", "serve", "--port", str(port), "--method", method]
    cmd += ["--log-level", "warning", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    return proc, wait_ready(proc, f"http://127.0.0.1:{port}", ready_s)


def wait_ready(proc: subprocess.Popen[bytes], url: str, seconds: float) -> str:
    """``url`` once its /readyz answers 200; the server is stopped and the script exits after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"the server did not become ready in {seconds:g} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="an already running service (default: start one)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--method", default="keep_first")
    parser.add_argument("--tokens", type=int, help="request text of at least this many tokens (default ~1.5K)")
    parser.add_argument("--question", action="store_true", help=f"send a question with each text ({QUESTION!r})")
    parser.add_argument("--max-queue", type=int, default=256, help="queue size of the server this script starts")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the server this script starts")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    proc, url = (None, args.url) if args.url else start_server(args.max_queue, args.workers, args.method)
    try:
        text = TEXT if args.tokens is None else text_of(args.tokens)
        question = QUESTION if args.question else None
        report = asyncio.run(
            load(url, args.requests, args.concurrency, args.method, proc, text=text, question=question)
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(15)
    report.update({"url": url, "workers": args.workers, "python": platform.python_version(), "cpus": os.cpu_count()})
    rows = [(k, report[k]) for k in ("method", "requests", "concurrency", "wall_s", "throughput_rps")]
    rows += [(k, report[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "ok", "errors")]
    rows += [(k, report[k]) for k in ("server_cpu_ms_per_request", "client_cpu_ms_per_request", "load_average_1m")]
    print(f"{'metric':<16}{'value':>12}\n{'-' * 28}")
    for key, value in rows:
        print(f"{key:<16}{value!s:>12}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    within_limit = args.url is not None or args.concurrency <= args.max_queue
    return 1 if within_limit and report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
