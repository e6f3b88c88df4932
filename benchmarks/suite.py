"""The full reader suite, resumable: `python -m benchmarks.suite --device cuda --reader qwen1.5b`.

Six tasks of >= 100 items (single-document QA, multi-document QA with distractors, needle retrieval, long
narrative QA, summary without a question, Korean QA), every registered method, `tfidf` and both llmlingua peers
at rates 0.5, 0.25 and 0.1 (the peers also at 0.05, since they overshoot their budget), read by a generative
reader (greedy, chat template, first line; `readers.TASK_PROMPTS`), scored by token F1 against the gold answers
(summary: unigram F1 against the full-context summary). Systems are compared at equal **achieved** ratio (each
system's (mean ratio, mean score) points, plus the full context at 1, interpolated at 0.5, 0.25, 0.1), with paired
bootstrap intervals of the difference against `tfidf` and each peer.

Every phase appends to a cache folder (``--cache``): ``items.jsonl.gz`` (built once from the data packages, so the
GPU machine needs none of them), ``compress-*.jsonl`` (one line per system x rate x item) and ``reader.jsonl``
(one line per generation, keyed by prompt hash). Work runs in `STAGES` order (the systems and tasks that decide
issue 19 first) until ``--deadline`` seconds have passed; a later run with the same cache does only what is
missing. ``--pack`` folds the plain ``.jsonl`` files into ``.jsonl.gz`` (for carrying or committing).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .data import LOADERS, DataUnavailable, Item
from .metrics import answer_retained
from .quality import plot, score, shape_table
from .readers import CachedChatReader
from .run import RESULTS, environment

TASKS = ("multidoc", "needle", "narrative", "qa", "korean", "summary")
SHAPES: dict[str, dict[str, Any]] = {
    "multidoc": {"passages": 10},
    "needle": {"words": 3000},
    "narrative": {"stories": 4},
    "qa": {},
    "korean": {"chars": 2500, "facts": 5},
    "summary": {"max_words": 1500},
}
RATES = (0.5, 0.25, 0.1)
PEER_RATES = (*RATES, 0.05)
AT_RATIOS = (0.5, 0.25, 0.1)
PEERS = ("peer:llmlingua", "peer:longllmlingua")
DECISIVE = ["auto", "tfidf", *PEERS, "ehpc", "longllmlingua", "dspc:large_model=null", "rerank"]
# run as these variants: the 0.5B model (dspc's cross-model loss, scope's rewriter) does not travel to the GPU
VARIANTS = {"dspc": "dspc:large_model=null", "scope": 'scope:rewriter="extractive"'}
EXTRA_VARIANTS = ["auto:adaptive=true"]  # ACC-RAG's early stop, the default before issue 19


def registered() -> list[str]:
    """Every registered method as the suite runs it (`VARIANTS`), so a new method joins without a change here."""
    import promptshrink

    return [VARIANTS.get(m["name"], m["name"]) for m in promptshrink.describe_methods()]


LONG_TASKS = ("multidoc", "needle", "narrative")
SHORT_TASKS = ("qa", "korean", "summary")
DEFAULT_CACHE = RESULTS / "suite_cache"
READERS = {
    # name -> (cache key, default location); the key names the weights so cached answers never mix readers
    "qwen1.5b": ("qwen2.5-coder-1.5b-instruct-q4_k_m:cc324af070c2", "PROMPTSHRINK_READER_DIR"),
}


class DeadlineReached(Exception):
    """The run's time is up; everything done so far is in the cache."""


def stages(extra: Sequence[str] = ()) -> list[tuple[tuple[str, ...], list[str]]]:
    """(tasks, systems) in the order they are run: the systems that decide issue 19 (plus ``extra``, e.g. a new
    method) on the long-context tasks, then on the other tasks, then every other system everywhere."""
    names = registered()
    decisive = [s for s in [*DECISIVE, *extra] if s.startswith("peer:") or s in names or s in extra]
    rest = [s for s in [*names, *EXTRA_VARIANTS] if s not in decisive]
    return [(LONG_TASKS, decisive), (SHORT_TASKS, decisive), (LONG_TASKS + SHORT_TASKS, rest)]


def rates_for(system: str) -> tuple[float, ...]:
    return PEER_RATES if system.startswith("peer:") else RATES


# --- cache ---------------------------------------------------------------------------------------------------


def read_lines(folder: Path, stem: str) -> Iterable[dict[str, Any]]:
    """Every JSON line of ``stem*.jsonl.gz`` and ``stem*.jsonl`` in ``folder`` (a torn last line is skipped)."""
    for path in sorted(folder.glob(f"{stem}*.jsonl.gz")) + sorted(folder.glob(f"{stem}*.jsonl")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def build_items(folder: Path, sizes: dict[str, int], seed: int) -> dict[str, str]:
    """Write ``items.jsonl.gz`` from the data packages (tasks whose package is missing are reported, not written)."""
    missing, items = {}, []
    for task, n in sizes.items():
        try:
            items += LOADERS[task](n, seed=seed, **SHAPES[task])
        except DataUnavailable as exc:
            missing[task] = str(exc)
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / "items.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(json.dumps({"header": {"sizes": sizes, "seed": seed, "shapes": SHAPES, "missing": missing}}) + "\n")
        for item in items:
            f.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")
    return missing


def load_cached_items(folder: Path) -> tuple[list[Item], dict[str, Any]]:
    header, items = {}, []
    for line in read_lines(folder, "items"):
        if "header" in line:
            header = line["header"]
        else:
            items.append(Item(**line))
    return items, header


def done_compressions(folder: Path) -> dict[tuple[str, float, str], dict[str, Any]]:
    """(system, rate, item id) -> its compression record; a success wins over a failure recorded for the same key."""
    done: dict[tuple[str, float, str], dict[str, Any]] = {}
    for r in read_lines(folder, "compress"):
        key = (r["system"], r["rate"], r["item"])
        if key not in done or "error" in done[key]:
            done[key] = r
    return done


def pack(folder: Path) -> None:
    """Fold each plain ``.jsonl`` into one ``<stem>-<n>.jsonl.gz`` (the next run appends to fresh plain files)."""
    for path in sorted(folder.glob("*.jsonl")):
        n = len(list(folder.glob(f"{path.stem}-*.jsonl.gz")))
        with open(path, "rb") as src, gzip.open(folder / f"{path.stem}-{n}.jsonl.gz", "wb") as dst:
            dst.write(src.read())
        path.unlink()


# --- compression (worker processes) --------------------------------------------------------------------------


def make_system(spec: str) -> Any:
    from .peers import peer_systems
    from .systems import parse_system

    if spec.startswith("peer:"):
        return next(p for p in peer_systems() if p.name == spec)
    return parse_system(spec)


_SYSTEMS: dict[str, Any] = {}  # per worker process: systems (and their models) built once, reused across stages


def compress_jobs(args: tuple[list[tuple[str, float, dict[str, Any]]], str, float, str]) -> int:
    """Worker: compress (system, rate, item) jobs, one JSON line each, until the deadline (epoch seconds)."""
    from .systems import BudgetSpec

    jobs, out, deadline, device = args
    os.environ["PROMPTSHRINK_DEVICE"] = device
    done = 0
    with open(out, "a", encoding="utf-8") as f:
        for spec, rate, raw in jobs:
            if time.time() > deadline:
                break
            item = Item(**raw)
            record: dict[str, Any] = {"system": spec, "rate": rate, "item": item.id}
            try:
                system = _SYSTEMS.get(spec) or _SYSTEMS.setdefault(spec, make_system(spec))
                reason = system.unavailable()
                if reason:
                    raise RuntimeError(f"unavailable: {reason}")
                o = system.compress(item, BudgetSpec(f"rate={rate}", rate=rate))
                record |= {"text": o.text, "original_tokens": o.original_tokens}
                record |= {"compressed_tokens": o.compressed_tokens, "seconds": o.seconds}
            except Exception as exc:  # one failing call must not sink the run; it is recorded and reported
                record["error"] = f"{type(exc).__name__}: {exc}"[:500]
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            done += 1
    return done


class Compressions:
    """Compression jobs over ``workers`` processes (spawned: CUDA cannot fork), each appending to its own file;
    `start` returns at once, so the reader can work on one stage while the next one is compressed."""

    def __init__(self, folder: Path, workers: int, deadline: float, device: str) -> None:
        self.folder, self.workers, self.deadline, self.device = folder, workers, deadline, device
        self.pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
        self.stamp = f"{os.getpid()}-{int(time.time())}"
        self.calls = 0

    def start(self, jobs: list[tuple[str, float, Item]]) -> Any:
        """Begin ``jobs``; the returned handle's ``get()`` waits and gives the number done."""
        by_system = sorted(jobs, key=lambda j: (j[0], j[2].id, j[1]))
        self.calls += 1
        tasks = [
            (
                [(s, r, asdict(i)) for s, r, i in by_system[k :: self.workers]],
                str(self.folder / f"compress-{self.stamp}-{self.calls}-{k}.jsonl"),
                self.deadline,
                self.device,
            )
            for k in range(min(self.workers, len(by_system)))
        ]
        if self.pool is None:
            done = sum(map(compress_jobs, tasks))
            return type("Done", (), {"get": staticmethod(lambda: [done])})
        return self.pool.map_async(compress_jobs, tasks)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


# --- reading -------------------------------------------------------------------------------------------------


class SuiteReader(CachedChatReader):
    """`CachedChatReader` that loads its weights from ``path`` (keyed by ``name``) and stops at a deadline."""

    def __init__(self, cache: Path, name: str, path: str, deadline: float, **kwargs: Any) -> None:
        super().__init__(cache, model=name, **kwargs)
        self.path = path
        self.deadline = deadline

    def load(self) -> tuple[Any, Any]:
        if self._model is None:
            from promptshrink.model_loading import load_causal_lm

            self._model = load_causal_lm(self.path)
        return self._model

    def _run_batch(self, keys: list[str], encoded: dict[str, list[int]], cap: int) -> None:
        if time.time() > self.deadline:
            raise DeadlineReached
        began = time.time()
        super()._run_batch(keys, encoded, cap)
        tokens = sum(len(encoded[k]) for k in keys)
        seconds = time.time() - began
        print(f"  read {len(keys)} prompts ({tokens} tokens) in {seconds:.1f}s", file=sys.stderr, flush=True)


def make_reader(name: str, folder: Path, deadline: float, device: str, report_only: bool = False) -> SuiteReader:
    """The reader ``name``: a `READERS` entry (weights folder from its environment variable) or a model alias."""
    if name in READERS:
        key, env = READERS[name]
        path = os.environ.get(env, "")  # not needed to report from the cache
        if not path and not report_only:
            raise SystemExit(f"--reader {name}: set ${env} to the dequantised model folder (benchmarks/README.md)")
    else:
        key = path = name
    gpu = device.startswith("cuda")
    sizes = {"batch_size": 64, "max_batch_tokens": 98_304, "step_tokens": 200.0} if gpu else {}
    return SuiteReader(folder / "reader.jsonl", key, path, deadline, **sizes)


def reader_cache_files(folder: Path) -> None:
    """Fold packed reader caches into the plain file `CachedChatReader` reads (it reads one file)."""
    packed = sorted(folder.glob("reader-*.jsonl.gz"))
    if packed:
        with open(folder / "reader.jsonl", "a", encoding="utf-8") as out:
            for path in packed:
                with gzip.open(path, "rt", encoding="utf-8") as f:
                    out.write(f.read())
                path.unlink()


# --- analysis ------------------------------------------------------------------------------------------------


def records(
    items: list[Item], compressions: dict[tuple[str, float, str], dict[str, Any]], reader: CachedChatReader
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, int]]:
    """Scored records for every compression whose answer (and whose item's full-context answer) is cached."""
    by_id = {i.id: i for i in items}
    full: dict[str, dict[str, Any]] = {}
    for item in items:
        output = reader.cached(item.task, item.context, item.question)
        if output is not None:
            full[item.id] = {"prediction": output, **score(item, output, output)}
    out, errors = [], defaultdict(int)
    for (system, rate, item_id), c in compressions.items():
        item = by_id.get(item_id)
        if item is None or item_id not in full:
            continue
        if "error" in c:
            errors[system] += 1
            continue
        prediction = reader.cached(item.task, c["text"], item.question) if c["text"].strip() else ""
        if prediction is None:
            continue
        out.append(
            {
                "system": system,
                "budget": f"rate={rate}",
                "item": item_id,
                "task": item.task,
                "ratio": c["compressed_tokens"] / max(1, c["original_tokens"]),
                "seconds": c["seconds"],
                "original_tokens": c["original_tokens"],
                "prediction": prediction,
                **score(item, prediction, full[item_id]["prediction"]),
            }
        )
    return out, full, dict(errors)


def matrices(recs: list[dict[str, Any]], full: dict[str, dict[str, Any]], ids: list[str]) -> Any:
    """(ratios, scores, full scores): budgets x items arrays over ``ids``, budgets with every item only."""
    import numpy as np

    by_budget: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in recs:
        by_budget[r["budget"]][r["item"]] = r
    complete = [b for b in sorted(by_budget) if all(i in by_budget[b] for i in ids)]
    ratios = np.array([[by_budget[b][i]["ratio"] for i in ids] for b in complete]).reshape(len(complete), len(ids))
    scores = np.array([[by_budget[b][i]["score"] for i in ids] for b in complete]).reshape(len(complete), len(ids))
    return ratios, scores, np.array([full[i]["score"] for i in ids])


def interpolated(ratios: Any, scores: Any, fulls: Any, picks: Any, at: float) -> Any:
    """Score at achieved ratio ``at`` for each row of ``picks`` (resampled item indices); NaN outside the points."""
    import numpy as np

    xs = np.concatenate([np.ones((picks.shape[0], 1)), ratios[:, picks].mean(-1).T], axis=1)
    ys = np.concatenate([fulls[picks].mean(-1)[:, None], scores[:, picks].mean(-1).T], axis=1)
    out = np.full(picks.shape[0], np.nan)
    for k in range(picks.shape[0]):
        order = np.argsort(xs[k])
        x, y = xs[k][order], ys[k][order]
        if x[0] - 1e-9 <= at <= x[-1] + 1e-9:
            out[k] = np.interp(at, x, y)
    return out


def paired(
    a: list[dict[str, Any]], b: list[dict[str, Any]] | None, full: dict[str, Any], at: float, resamples: int, seed: int
) -> dict[str, Any] | None:
    """Score of ``a`` (minus ``b``'s, paired on their shared items) at ratio ``at`` with a 95% bootstrap CI."""
    import numpy as np

    ids = sorted({r["item"] for r in a} & ({r["item"] for r in b} if b is not None else {r["item"] for r in a}))
    if not ids:
        return None
    picks = np.vstack([np.arange(len(ids)), np.random.default_rng(seed).integers(0, len(ids), (resamples, len(ids)))])
    values = interpolated(*matrices(a, full, ids), picks, at)
    if b is not None:
        values = values - interpolated(*matrices(b, full, ids), picks, at)
    point, boot = values[0], values[1:]
    if np.isnan(point) or np.isnan(boot).mean() > 0.5:
        return None
    lo, hi = np.nanpercentile(boot, [2.5, 97.5])
    return {"value": float(point), "ci": [float(lo), float(hi)], "items": len(ids)}


def summarise(
    recs: list[dict[str, Any]], full: dict[str, dict[str, Any]], resamples: int = 1000, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows (system x task: score at each ratio with a CI, the curve's points) and paired comparisons of every
    system against `tfidf` and each peer (a win or loss only when the 95% CI excludes 0)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in recs:
        groups[(r["system"], r["task"])].append(r)
    rows, comparisons = [], []
    for (system, task), group in sorted(groups.items()):
        ratio_by_budget: dict[str, list[float]] = defaultdict(list)
        for r in group:
            ratio_by_budget[r["budget"]].append(r["ratio"])
        row: dict[str, Any] = {"system": system, "task": task, "items": len({r["item"] for r in group})}
        ids = sorted({r["item"] for r in group})
        ratios, scores, fulls = matrices(group, full, ids)
        row["points"] = [(1.0, float(fulls.mean()))] + [
            (float(x), float(y)) for x, y in zip(ratios.mean(-1), scores.mean(-1))
        ]
        row["achieved"] = {b: sum(v) / len(v) for b, v in sorted(ratio_by_budget.items())}
        for at in AT_RATIOS:
            cell = paired(group, None, full, at, resamples, seed)
            row[f"at_{at}"] = None if cell is None else {"score": cell["value"], "ci": cell["ci"]}
        rows.append(row)
        for base in ("tfidf", *PEERS):
            if base == system or (base, task) not in groups:
                continue
            for at in AT_RATIOS:
                diff = paired(group, groups[(base, task)], full, at, resamples, seed)
                if diff is None:
                    continue
                lo, hi = diff["ci"]
                verdict = "win" if lo > 0 else "loss" if hi < 0 else "tie"
                comparisons.append(
                    {"task": task, "at": at, "system": system, "baseline": base, **diff} | {"verdict": verdict}
                )
    return rows, comparisons


def tables(rows: list[dict[str, Any]], comparisons: list[dict[str, Any]], full: dict[str, Any]) -> str:
    """Markdown: score per task and system at each ratio [95% CI]; then every paired comparison."""

    def cell(entry: dict[str, Any] | None) -> str:
        return "–" if entry is None else f"{entry['score']:.2f} [{entry['ci'][0]:.2f}, {entry['ci'][1]:.2f}]"

    lines = ["| task | system | items | full context | " + " | ".join(f"F1 @ {a}" for a in AT_RATIOS) + " | achieved |"]
    lines.append("|---" * (5 + len(AT_RATIOS)) + "|")
    for row in rows:
        achieved = " / ".join(f"{v:.2f}" for v in row["achieved"].values())
        cells = " | ".join(cell(row[f"at_{a}"]) for a in AT_RATIOS)
        lines.append(
            f"| {row['task']} | {row['system']} | {row['items']} | {row['points'][0][1]:.2f} | {cells} | {achieved} |"
        )
    lines += [
        "",
        "| task | ratio | system | vs | difference [95% CI] | items | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        lines.append(
            f"| {c['task']} | {c['at']} | {c['system']} | {c['baseline']} | {c['value']:+.3f} "
            f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}] | {c['items']} | {c['verdict']} |"
        )
    return "\n".join(lines)


def kept_answer(item: Item, text: str) -> bool:
    """Whether a gold answer survives in ``text``: `metrics.answer_retained`, or for an answer of 4+ digits its plain
    occurrence (Korean glues particles to numbers: "6209929이다")."""
    return answer_retained(text, item.answers) or any(a.isdigit() and len(a) >= 4 and a in text for a in item.answers)


def retention(
    items: list[Item], compressions: dict[tuple[str, float, str], dict[str, Any]], resamples: int = 1000
) -> list[dict[str, Any]]:
    """Reader-free rows: per task, asked rate and system, the share of items whose gold answer survives and the
    mean achieved ratio, with the paired bootstrap difference (95% CI) from `tfidf` at the same rate."""
    import numpy as np

    by_id = {i.id: i for i in items}
    kept: dict[tuple[str, float, str], dict[str, float]] = defaultdict(dict)
    ratios: dict[tuple[str, float, str], list[float]] = defaultdict(list)
    for (system, rate, item_id), c in compressions.items():
        item = by_id.get(item_id)
        if item is None or not item.answers or "error" in c:
            continue
        kept[(item.task, rate, system)][item_id] = float(kept_answer(item, c["text"]))
        ratios[(item.task, rate, system)].append(c["compressed_tokens"] / max(1, c["original_tokens"]))
    rng = np.random.default_rng(0)
    rows = []
    for task, rate, system in sorted(kept, key=lambda k: (TASKS.index(k[0]), -k[1], k[2])):
        mine = kept[(task, rate, system)]
        row: dict[str, Any] = {"task": task, "rate": rate, "system": system, "items": len(mine)}
        row |= {"kept": float(np.mean(list(mine.values()))), "ratio": float(np.mean(ratios[(task, rate, system)]))}
        base = kept.get((task, rate, "tfidf"))
        common = sorted(set(mine) & set(base or {}))
        if system != "tfidf" and common:
            d = np.array([mine[i] - base[i] for i in common])
            boot = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
            row["vs_tfidf"] = {"value": float(d.mean()), "ci": [float(x) for x in np.percentile(boot, [2.5, 97.5])]}
            row["vs_tfidf"]["items"] = len(common)
        rows.append(row)
    return rows


def retention_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| task | rate | system | items | answer kept | achieved ratio | vs tfidf [95% CI] |", "|---" * 7 + "|"]
    for r in rows:
        v = r.get("vs_tfidf")
        diff = f"{v['value']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]" if v else ""
        cells = [r["task"], r["rate"], r["system"], r["items"], f"{r['kept']:.3f}", f"{r['ratio']:.3f}", diff]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


# --- driver --------------------------------------------------------------------------------------------------


def plan(items: list[Item], extra: Sequence[str], tasks: Sequence[str] | None, systems: Sequence[str] | None) -> Any:
    """(stage index, system, rate, item) for every planned compression, in run order."""
    for k, (stage_tasks, stage_systems) in enumerate(stages(extra)):
        for system in stage_systems:
            if systems is not None and system not in systems:
                continue
            for item in items:
                if item.task in stage_tasks and (tasks is None or item.task in tasks):
                    for rate in rates_for(system):
                        yield k, system, rate, item


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="suite_full", help="results file stem under --out")
    parser.add_argument("--device", default="cpu", help="methods, peers and reader: cpu or cuda")
    parser.add_argument("--reader", default="large-lm", help="qwen1.5b (GPU) or a model alias such as large-lm")
    parser.add_argument("--items", type=int, default=100, help="items per task when the cache has none yet")
    parser.add_argument("--limit", type=int, help="use only the first N cached items of each task (smoke runs)")
    parser.add_argument("--tasks", nargs="*", help="only these tasks (default: all)")
    parser.add_argument("--systems", nargs="*", help="only these systems (default: every stage's)")
    parser.add_argument("--extra", nargs="*", default=[], help="more systems for the first stages (a new method)")
    parser.add_argument("--workers", type=int, default=1, help="compression processes")
    parser.add_argument("--deadline", type=float, default=float("inf"), help="stop starting work after N seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument(
        "--phase",
        choices=("items", "run", "compress", "report"),
        default="run",
        help="compress: only the missing compressions (no reader); report: tables from the cache",
    )
    parser.add_argument("--overlap", action="store_true", help="compress the next stage while reading one")
    parser.add_argument("--retry-errors", action="store_true", help="run failed compressions again")
    parser.add_argument("--pack", action="store_true", help="gzip the cache's plain files at the end")
    args = parser.parse_args(argv)
    started = time.time()
    deadline = started + args.deadline
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PROMPTSHRINK_DEVICE"] = args.device
    if not list(args.cache.glob("items*.jsonl.gz")):
        missing = build_items(args.cache, dict.fromkeys(TASKS, args.items), args.seed)
        print(f"items built in {args.cache}; missing: {missing or 'none'}", file=sys.stderr)
    if args.phase == "items":
        return 0
    items, header = load_cached_items(args.cache)
    if args.limit is not None:  # a smoke run: the first N cached items of each task
        items = [i for t in TASKS for i in [x for x in items if x.task == t][: args.limit]]
    reader_cache_files(args.cache)
    reader = make_reader(args.reader, args.cache, deadline, args.device, args.phase in ("report", "compress"))
    progress: dict[str, Any] = {}
    if args.phase in ("run", "compress"):
        progress = run(args, items, reader, deadline)
    recs, full, errors = records(items, done_compressions(args.cache), reader)
    rows, comparisons = summarise(recs, full, args.resamples, args.seed)
    result = {
        "environment": environment(
            "python -m benchmarks.suite " + " ".join(argv if argv is not None else sys.argv[1:])
        ),
        "reader": reader.model_name,
        "device": args.device,
        "items": header,
        "data": {t: sum(1 for i in items if i.task == t) for t in TASKS},
        "progress": progress,
        "errors": errors,
        "reader_calls": {"generated": reader.generated, "generation_s": round(reader.generation_s, 1)},
        "full": full,
        "rows": rows,
        "comparisons": comparisons,
        "records": recs,
        "wall_s": round(time.time() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if rows and importlib.util.find_spec("matplotlib") is not None:  # the GPU machine has none: plot here after
        result["plot"] = str(plot(rows, args.out / f"{args.name}.png"))
    shapes, result["auto_evidence"] = shape_table(rows, required=TASKS)
    result["retention"] = retention(items, done_compressions(args.cache), args.resamples)
    (args.out / f"{args.name}_retention.md").write_text(retention_table(result["retention"]) + "\n")
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    text = tables(rows, comparisons, full) + "\n\n" + shapes
    (args.out / f"{args.name}.md").write_text(text + "\n")
    print(text)
    print(json.dumps({"progress": progress, "errors": errors, "wall_s": result["wall_s"]}), file=sys.stderr)
    if args.pack:
        pack(args.cache)
    return 0


def run(args: argparse.Namespace, items: list[Item], reader: SuiteReader, deadline: float) -> dict[str, str]:
    """Every stage's missing compressions, each stage read once compressed (with ``--overlap``, stage k + 1 is
    compressed while stage k is read: on the H200 the reader then wrote no batch in 6 minutes, with 14
    compression processes on the GPU and 16 CPU cores); returns progress."""
    _prepare_models(args.device)
    planned = list(plan(items, args.extra, args.tasks, args.systems))
    ks = sorted({p[0] for p in planned})
    workers = Compressions(args.cache, args.workers, deadline, args.device)

    def begin(k: int) -> Any:
        done = {key for key, c in done_compressions(args.cache).items() if not (args.retry_errors and "error" in c)}
        jobs = [(s, r, i) for stage, s, r, i in planned if stage == k and (s, r, i.id) not in done]
        print(f"stage {k}: {len(jobs)} compressions to do", file=sys.stderr, flush=True)
        return workers.start(jobs), time.time()

    try:
        pending = begin(ks[0]) if ks else None
        for n, k in enumerate(ks):
            handle, t0 = pending
            count = sum(handle.get())
            print(f"stage {k}: {count} compressions in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)
            ahead = args.overlap and n + 1 < len(ks) and time.time() < deadline
            pending = begin(ks[n + 1]) if ahead else None
            if args.phase == "run":
                _read_stage(reader, [p for p in planned if p[0] == k], done_compressions(args.cache))
            if not args.overlap and n + 1 < len(ks) and time.time() < deadline:
                pending = begin(ks[n + 1])
            if time.time() > deadline:
                raise DeadlineReached
    except DeadlineReached:
        print("deadline reached: what is done is in the cache; run the same command again to go on", file=sys.stderr)
    finally:
        workers.close()
    done = done_compressions(args.cache)
    return {
        f"stage {k}": f"{sum(1 for p in planned if p[0] == k and (p[1], p[2], p[3].id) in done)} of "
        f"{sum(1 for p in planned if p[0] == k)} compressions"
        for k in ks
    }


def _prepare_models(device: str) -> None:
    """Build the models' dequantised caches once, before worker processes start (they would race to build them)."""
    from promptshrink.model_loading import manifest

    for alias in ("default-lm", "embedder", "reranker", "bi-encoder"):
        try:
            manifest()[alias].locate()
        except Exception as exc:  # a method that needs the model reports it per call
            print(f"{alias}: {exc}", file=sys.stderr)


def _read_stage(reader: SuiteReader, stage: list[Any], done: dict[tuple[str, float, str], dict[str, Any]]) -> None:
    """Full-context answers of the stage's items, then the answers from every finished compression of it."""
    items = list({p[3].id: p[3] for p in stage}.values())
    asks = [(i.task, i.context, i.question) for i in items]
    for _, system, rate, item in stage:
        c = done.get((system, rate, item.id))
        if c and "error" not in c and c["text"].strip():
            asks.append((item.task, c["text"], item.question))
    t0, before = time.time(), reader.generated
    print(f"  reading stage: {len(asks)} prompts (cached ones are not generated again)", file=sys.stderr, flush=True)
    reader.answer_many(asks)
    print(f"  read {reader.generated - before} new prompts in {time.time() - t0:.0f}s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
