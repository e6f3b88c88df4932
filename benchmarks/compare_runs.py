"""Answer retention of two `benchmarks.run` results compared item by item (e.g. before and after a speed change).

    python -m benchmarks.compare_runs before/quick.json after/quick.json --out benchmarks/results/retention_before_after

Only (system, budget, item) calls present in both runs are compared (a per-system time cap can stop a system after
a different number of calls in each run). Per system: pairs, answers kept before and after, pairs whose compressed
text is identical, and the mean achieved ratio before and after. Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def paired(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per system over the calls both runs made."""

    def calls(run: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
        return {(r["system"], r["budget"], r["item"]): r for r in run["records"] if "retained" in r}

    old, new = calls(before), calls(after)
    rows: dict[str, dict[str, Any]] = {}
    for key in sorted(old.keys() & new.keys()):
        a, b = old[key], new[key]
        row = rows.setdefault(
            key[0], {"system": key[0], "pairs": 0, "kept_before": 0, "kept_after": 0, "identical_text": 0}
        )
        row["pairs"] += 1
        row["kept_before"] += bool(a["retained"])
        row["kept_after"] += bool(b["retained"])
        row["identical_text"] += a["text"] == b["text"]
        for name, r in (("ratio_before", a), ("ratio_after", b)):
            row[name] = row.get(name, 0.0) + r["compressed_tokens"] / max(1, r["original_tokens"])
    for row in rows.values():
        row["ratio_before"] /= row["pairs"]
        row["ratio_after"] /= row["pairs"]
    return list(rows.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="output path without extension")
    args = parser.parse_args(argv)
    before, after = json.loads(args.before.read_text()), json.loads(args.after.read_text())
    rows = paired(before, after)
    report = {
        "before": {"file": str(args.before), "environment": before.get("environment"), "wall_s": before.get("wall_s")},
        "after": {"file": str(args.after), "environment": after.get("environment"), "wall_s": after.get("wall_s")},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| system | pairs | answer kept before | after | identical output | achieved ratio before | after |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| `{r['system']}` | {r['pairs']} | {r['kept_before']} | {r['kept_after']} | {r['identical_text']} | "
        f"{r['ratio_before']:.3f} | {r['ratio_after']:.3f} |"
        for r in rows
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
