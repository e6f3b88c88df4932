"""benchmarks/load_test.py against the test server: concurrent requests below the queue limit all succeed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT


def test_load_test_reports_no_errors(server: str, tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    cmd = [sys.executable, "benchmarks/load_test.py", "--url", server, "--requests", "40", "--concurrency", "40"]
    done = subprocess.run([*cmd, "--output", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text())
    assert report["ok"] == 40 and report["errors"] == 0 and report["p99_ms"] >= report["p50_ms"] > 0
    assert "throughput_rps" in done.stdout
