"""How big the load, fault and fuzz tests run, and where they report their figures.

``make test`` runs them small; ``make stress`` sets ``DRC_STRESS=full`` for the issue's full
figures and ``DRC_STRESS_REPORT`` to a file where each test appends the figures it measured
(one JSON object a line), which ``tests/stress/report.py`` turns into one table.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FULL = os.environ.get("DRC_STRESS", "") == "full"
BENCH = Path(__file__).resolve().parent.parent / "bench"

#: Cases run by the fuzz tests of this process, by family ("link frames", "tokens" …).
FUZZ_CASES: collections.Counter[str] = collections.Counter()
#: The tests among them that failed (a crash or a state change), by node id.
FUZZ_FAILED: list[str] = []


def size(small: int, full: int) -> int:
    """``small`` under ``make test``, ``full`` under ``make stress``."""
    return full if FULL else small


def fuzzed(family: str) -> None:
    """Count one fuzz case (the session's total is reported at the end)."""
    FUZZ_CASES[family] += 1


def record(figure: str, target: str, measured: str, ok: bool, **data: object) -> None:
    """Append a measured figure to the stress report, when one is being written."""
    path = os.environ.get("DRC_STRESS_REPORT")
    if not path:
        return
    row = {"figure": figure, "target": target, "measured": measured, "ok": bool(ok), **data}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def record_fuzz_counts() -> None:
    """At session end: the fuzz cases run, by family, and the fuzz tests that failed (the
    report sums them, and judges the fuzz row by them alone, not by other tests' failures)."""
    path = os.environ.get("DRC_STRESS_REPORT")
    if path and FUZZ_CASES:
        with open(path, "a") as f:
            entry = {"fuzz_cases": dict(FUZZ_CASES), "fuzz_failed": FUZZ_FAILED}
            f.write(json.dumps(entry) + "\n")


def run_bench(
    script: str, *args: str, timeout: float, env: dict[str, str] | None = None, check: bool = True
) -> dict[str, Any]:
    """Run ``bench/<script>`` and the JSON it prints (figures measured side by side in one
    run). ``check``: it must exit 0; else it need only print (it exits 1 on a missed target,
    which the caller judges from the JSON)."""
    run = subprocess.run(
        [sys.executable, script, *args],
        cwd=BENCH,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0 if check else run.stdout, run.stderr[-3000:]
    return json.loads(run.stdout)


def check_figures(rows: list[dict[str, Any]], count: int) -> None:
    """A benchmark's figure rows: ``count`` of them, each with its target and what was
    measured; met, at full size only (a small run is all start-up, its rates mean nothing)."""
    assert len(rows) == count and all(row["measured"] and row["target"] for row in rows)
    if FULL:
        missed = [row for row in rows if not row["ok"]]
        assert not missed, missed
