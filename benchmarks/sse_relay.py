"""SSE relay benchmark: the proxy relaying one large server-sent event (issue 20: 5 MB took 0.6 s, 20 MB 12 s).

    python benchmarks/sse_relay.py                 # 5 and 20 MB
    python benchmarks/sse_relay.py --sizes 5 20 80

A socket upstream answers a streaming chat completion with one ``data:`` event of N MB, sent in 64 KB writes; a
real uvicorn server (the app, compression off) relays it. Prints seconds per size, checks the bytes arrived
unchanged, and writes benchmarks/results/sse_relay.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from promptshrink.service import Settings, create_app

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sse_relay.json"
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"


def upstream(event: bytes) -> str:
    """A one-answer-per-connection socket server streaming ``event``; returns its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()

    def serve() -> None:
        while True:
            conn, _ = sock.accept()
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, body = data.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(HEAD)
                for i in range(0, len(event), 65536):
                    conn.sendall(event[i : i + 65536])

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5, 20], help="event sizes in MB")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        event = b"data: " + b"x" * (size << 20) + b"\n\n"
        settings = Settings(method="keep_first", upstream_base_url=upstream(event), proxy_compress=False)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        start = time.perf_counter()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/chat/completions"
        with httpx.stream("POST", url, json=body, timeout=600) as r:
            got = r.read()
        seconds = time.perf_counter() - start
        server.should_exit = True
        thread.join(10)
        rows.append({"mb": size, "seconds": round(seconds, 3), "unchanged": got == event})
        print(f"{size:>5} MB  {seconds:8.3f} s  unchanged={got == event}")
    report = {"rows": rows, "cpus": os.cpu_count(), "load_average_1m": os.getloadavg()[0]}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")
    return 0 if all(r["unchanged"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
