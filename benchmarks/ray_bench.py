"""Ray benchmarks: service throughput with 1 and 2 Ray Serve replicas (and the plain one-process service), and the
Ray Data batch job's records/s against a plain Python loop over the same records.

    OMP_NUM_THREADS=1 python -m benchmarks.ray_bench [--method tfidf] [--requests 300] [--concurrency 16] \
        [--batch tfidf:400 selective_context:16]

Starts one local Ray instance with this machine's CPUs. Writes benchmarks/results/ray.json and ray.png and prints
a markdown table. Serve: the load generator of `load_test.py` (same text, same request), one replica per CPU at
most, one compression thread per replica. Batch: records are windows of tests/data/article.txt; the loop calls
`promptshrink.batch.compress_record` (what the Ray workers call) in this process, after a warm-up call, with
$OMP_NUM_THREADS torch threads (1 as above: oversubscribed threads spin on a busy machine); each Ray worker
reserves one CPU (one torch thread). Ray rows include the actors'
start-up and model loading.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import time
from pathlib import Path
from typing import Any

from promptshrink.batch import BatchSpec, compress_record, run_batch

from .load_test import load, start_server

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ARTICLE = ROOT / "tests" / "data" / "article.txt"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_rows(method: str, requests: int, concurrency: int, replica_counts: list[int]) -> list[dict[str, Any]]:
    """Throughput of the plain service (one process, threads = CPUs) and of Ray Serve with each replica count."""
    from ray import serve

    from promptshrink.service import Settings
    from promptshrink.service.ray_app import DEPLOYMENT, build

    rows = []
    proc, url = start_server(max_queue=1024, method=method)
    try:
        rows.append({"setup": "plain service (1 process)", **asyncio.run(load(url, requests, concurrency, method))})
    finally:
        proc.terminate()
        proc.wait(15)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for replicas in replica_counts:
        settings = Settings(method=method, ray_replicas=replicas, ray_cpus_per_replica=1, max_queue=1024)
        serve.run(build(settings), name=DEPLOYMENT, route_prefix="/")
        report = asyncio.run(load(f"http://127.0.0.1:{port}", requests, concurrency, method))
        rows.append({"setup": f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''}", **report})
        serve.delete(DEPLOYMENT)
    serve.shutdown()
    return rows


def corpus(n: int) -> list[dict[str, Any]]:
    """``n`` records: overlapping windows of 12 sentences of the article, each with an id and a question."""
    sentences = [s.strip() + "." for s in ARTICLE.read_text().replace("\n", " ").split(".") if s.strip()]
    return [
        {"id": f"w{i}", "text": " ".join(sentences[i % len(sentences) :][:12]), "q": "What did the President ask?"}
        for i in range(n)
    ]


def batch_rows(method: str, n: int, worker_counts: list[int], tmp: Path) -> list[dict[str, Any]]:
    """Records/s of a plain loop over `compress_record` and of `run_batch` with each number of workers."""
    records = corpus(n)
    spec = BatchSpec(method=method, rate=0.5, question_field="q")
    compress_record(records[0], spec)  # models and tokenizer loaded before timing
    start = time.perf_counter()
    tokens = sum(compress_record(r, spec)["original_tokens"] for r in records)
    loop_s = time.perf_counter() - start
    rows = [{"setup": f"{method}: plain loop", "records": n, "wall_s": round(loop_s, 2), "tokens_in": tokens}]
    source = tmp / f"ray_bench_in_{method}.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    for workers in worker_counts:
        out = tmp / f"ray_bench_out_{method}_{workers}.jsonl"
        out.unlink(missing_ok=True)
        summary = run_batch(source, out, spec, ray=True, workers=workers)
        assert summary.written == n and not summary.failed, summary.failed[:3]
        rows.append(
            {
                "setup": f"{method}: Ray Data, {workers} worker{'s' if workers > 1 else ''}",
                "records": n,
                "wall_s": round(summary.elapsed_s, 2),
                "tokens_in": summary.tokens_in,
            }
        )
    for row in rows:
        row["records_per_s"] = round(row["records"] / row["wall_s"], 2)
    return rows


def plot(serve: list[dict[str, Any]], batch: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.barh([r["setup"] for r in serve], [r["throughput_rps"] for r in serve], color="#4c72b0")
    left.set_xlabel("requests/s")
    left.set_title(f"service, {serve[0]['method']}, {serve[0]['concurrency']} concurrent")
    right.barh([r["setup"] for r in batch], [r["records_per_s"] for r in batch], color="#dd8452")
    right.set_xscale("log")
    right.set_xlabel("records/s, log scale (Ray: with actor start-up)")
    right.set_title("batch job")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="tfidf")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--batch", nargs="*", default=["tfidf:400", "selective_context:16"], help="method:records")
    args = parser.parse_args(argv)
    import ray

    cpus = os.cpu_count() or 1
    counts = sorted({1, min(2, cpus)})
    load_before = os.getloadavg()[0]
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        serve = serve_rows(args.method, args.requests, args.concurrency, counts)
        batch = []
        for job in args.batch:
            method, _, n = job.partition(":")
            batch += batch_rows(method, int(n), counts, RESULTS)
    finally:
        ray.shutdown()
        for f in RESULTS.glob("ray_bench_*.jsonl*"):
            f.unlink()
    load = [load_before, os.getloadavg()[0]]
    report = {"python": platform.python_version(), "cpus": cpus, "load_avg_1m": load, "serve": serve, "batch": batch}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(serve, batch, RESULTS / "ray.png")
    print("| service setup | requests/s | p50 ms | p99 ms | errors |\n|---|---|---|---|---|")
    for r in serve:
        print(f"| {r['setup']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['errors']} |")
    print("\n| batch setup | records | records/s | wall s |\n|---|---|---|---|")
    for r in batch:
        print(f"| {r['setup']} | {r['records']} | {r['records_per_s']} | {r['wall_s']} |")
    print(f"\n{cpus} CPUs, 1-min load average {load[0]:.1f} before, {load[1]:.1f} after; wrote ray.json and ray.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
