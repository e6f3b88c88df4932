"""The proxy's added latency per API shape (OpenAI chat and completions, Anthropic Messages, OpenAI Responses), with
compression off, on, and fail-open triggered; and the tool-output size worth compressing.

    python benchmarks/proxy_overhead.py                 # 200 requests per cell, method tfidf
    python benchmarks/proxy_overhead.py --requests 50 --method keep_first

Starts a minimal upstream (fixed answers, this script with ``--stub``) and `promptshrink serve` in front of it,
both as their own processes, waits for the proxy's warm-up, then sends each request once directly to the
upstream and once through the proxy, alternating, one at a time, the API shapes taking turns (so a machine
whose load drifts slows all alike). The added latency at p50/p99 is the proxy's percentile minus the direct
one. The request is an agent turn: a question, a tool call and a ~9 KB JSON tool output (completions: the same
rows as a 7.6 KB prose report, then the question, as one prompt). ``fail-open`` sets a 0.001 ms compression
budget, so every request takes the fail-open path. The outcome column counts the warm-up requests too. Writes
benchmarks/results/proxy_overhead.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "proxy_overhead.json"
ROWS = [{"id": i, "city": f"city{i}", "temp_c": 10 + i % 15, "note": "clear skies and light wind"} for i in range(120)]
TOOL = json.dumps({"results": ROWS})
QUESTION = "What is the temperature in city42?"
REPORT = " ".join(f"Station {r['id']} in {r['city']} reports {r['temp_c']} C, {r['note']}." for r in ROWS)
BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": QUESTION},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                    ],
                },  # fmt: skip
                {"role": "tool", "tool_call_id": "c1", "content": TOOL},
            ],
        },
    ),
    "completions": ("/v1/completions", {"model": "m", "prompt": f"{REPORT}\n\nQuestion: {QUESTION}\nAnswer:"}),
    "messages": (
        "/v1/messages",
        {
            "model": "m",
            "max_tokens": 8,
            "messages": [
                {"role": "user", "content": QUESTION},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": TOOL}]},
            ],
        },
    ),
    "responses": (
        "/v1/responses",
        {
            "model": "m",
            "input": [
                {"role": "user", "content": QUESTION},
                {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": TOOL},
            ],
        },
    ),
}
MODES = {
    "off": {"x-promptshrink-compress": "false"},
    "on": {},
    "fail-open": {"x-promptshrink-budget-ms": "0.001"},
}
THRESHOLD_SIZES = (200, 350, 500, 750, 1000, 2000, 4000)


def stub() -> None:
    """The upstream: a fixed small JSON answer on every route."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.post("/v1/{path:path}")
    async def answer(path: str) -> JSONResponse:
        return JSONResponse({"id": "x", "object": path, "content": [{"type": "text", "text": "ok"}]})

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")


def cpu_model() -> str:
    """The CPU's model name (``lscpu``'s "Model name"), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(url: str, status: int | None = None) -> None:
    """Wait until ``url`` answers (with ``status``, when given)."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(url, timeout=2)
            if status is None or answer.status_code == status:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not come up in 90 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(client: httpx.Client, upstream: str, proxy: str, requests: int) -> list[dict[str, Any]]:
    """Per (shape, mode) cell, direct and proxied latencies; the shapes take turns request by request, so no
    shape is measured on a colder or more loaded machine than another."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for mode, headers in MODES.items():
        for _ in range(requests + 5):  # the first 5 warm connections and caches up
            for shape, (path, body) in BODIES.items():
                cell = cells.setdefault((shape, mode), {"direct": [], "via": [], "compress": [], "outcome": set()})
                t = time.perf_counter()
                client.post(f"{upstream}{path}", json=body).raise_for_status()
                d = time.perf_counter() - t
                t = time.perf_counter()
                r = client.post(f"{proxy}{path}", json=body, headers=headers)
                v = time.perf_counter() - t
                r.raise_for_status()
                cell["direct"].append(d * 1000)
                cell["via"].append(v * 1000)
                cell["compress"].append(float(r.headers.get("x-promptshrink-compression-ms", "nan")))
                cell["outcome"].add(r.headers.get("x-promptshrink-fail-open") or ("saved" if
                                    "x-promptshrink-tokens-saved" in r.headers else "untouched"))  # fmt: skip
    rows = []
    for (shape, mode), cell in sorted(cells.items(), key=lambda kv: list(BODIES).index(kv[0][0])):  # modes in order
        direct, via = cell["direct"][5:], cell["via"][5:]
        timed = [c for c in cell["compress"][5:] if c == c]
        rows.append({
            "shape": shape,
            "mode": mode,
            "requests": requests,
            "direct_p50_ms": round(percentile(direct, 0.5), 2),
            "direct_p99_ms": round(percentile(direct, 0.99), 2),
            "added_p50_ms": round(percentile(via, 0.5) - percentile(direct, 0.5), 2),
            "added_p99_ms": round(percentile(via, 0.99) - percentile(direct, 0.99), 2),
            "compression_p50_ms": round(statistics.median(timed), 2) if timed else None,
            "compression_p99_ms": round(percentile(timed, 0.99), 2) if timed else None,
            "outcome": sorted(cell["outcome"]),
        })  # fmt: skip
    return rows


def threshold(method: str) -> list[dict[str, Any]]:
    """Tokens a tool output of each size saves at rate 0.5, and what compressing it costs."""
    import promptshrink
    from promptshrink.formats import compress_conversation

    log_line = "2026-01-01 10:00:{:02d} INFO GET /api/items/{} 200 in {} ms"
    out = []
    for kind, make in (
        ("json", lambda n: json.dumps(ROWS[: max(1, n // 70)])),
        ("log", lambda n: "\n".join(log_line.format(i % 60, i, i * 3) for i in range(max(1, n // 50)))),
        ("text", lambda n: " ".join(f"Step {i} finished and the report was written." for i in range(max(1, n // 45)))),
    ):
        for size in THRESHOLD_SIZES:
            text = make(size)
            conv = [{"role": "user", "content": QUESTION}, {"role": "tool", "tool_call_id": "c", "content": text}]
            compress_conversation(conv, method, rate=0.5, tool_min_chars=0)  # warm
            t = time.perf_counter()
            r = compress_conversation(conv, method, rate=0.5, tool_min_chars=0)
            ms = (time.perf_counter() - t) * 1000
            tokens = promptshrink.get_tokenizer().count(text)
            out.append({"kind": kind, "chars": len(text), "tokens": tokens,
                        "saved_tokens": r.original_tokens - r.compressed_tokens, "ms": round(ms, 2)})  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--method", default="tfidf")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    up_port, proxy_port = free_port(), free_port()
    upstream, proxy = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{proxy_port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMPTSHRINK_UPSTREAM_BASE_URL": f"{upstream}/v1"}
    procs = [subprocess.Popen([sys.executable, __file__, "--stub", str(up_port)], env=env)]
    cmd = [sys.executable, "-m", "promptshrink.cli", "serve", "--port", str(proxy_port), "--method", args.method]
    procs.append(subprocess.Popen([*cmd, "--log-level", "warning"], env=env, cwd=ROOT))
    try:
        wait(f"{upstream}/")
        wait(f"{proxy}/readyz", 200)  # warmed up: models and tokenizers loaded
        with httpx.Client(timeout=60) as client:
            rows = measure(client, upstream, proxy, args.requests)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(15)
    sizes = threshold(args.method)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{cpu_model()}, {os.cpu_count()} cores",
        "method": args.method,
        "tool_output_chars": len(TOOL),
        "rows": rows,
        "tool_threshold": sizes,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{report['date']}, {report['machine']}, method {args.method}, {len(TOOL)}-char tool output\n")
    print(
        f"{'shape':10} {'mode':10} {'direct p50':>10} {'added p50':>10} {'added p99':>10} {'compress p50':>12}  outcome"
    )
    for r in rows:
        cp = "-" if r["compression_p50_ms"] is None else f"{r['compression_p50_ms']:.1f}"
        print(f"{r['shape']:10} {r['mode']:10} {r['direct_p50_ms']:10.2f} {r['added_p50_ms']:10.2f} "
              f"{r['added_p99_ms']:10.2f} {cp:>12}  {','.join(r['outcome'])}")  # fmt: skip
    print(f"\n{'kind':6} {'chars':>6} {'tokens':>6} {'saved@0.5':>9} {'ms':>7}")
    for s in sizes:
        print(f"{s['kind']:6} {s['chars']:6} {s['tokens']:6} {s['saved_tokens']:9} {s['ms']:7.2f}")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--stub":
        stub()
    else:
        sys.exit(main())
