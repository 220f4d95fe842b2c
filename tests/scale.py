"""How big the load, fault and fuzz tests run, and where they report their figures.

``make test`` runs them small; ``make stress`` sets ``DRC_STRESS=full`` for the issue's full
figures and ``DRC_STRESS_REPORT`` to a file where each test appends the figures it measured
(one JSON object a line), which ``tests/stress/report.py`` turns into one table.
"""

from __future__ import annotations

import collections
import json
import os

FULL = os.environ.get("DRC_STRESS", "") == "full"

#: Cases run by the fuzz tests of this process, by family ("link frames", "tokens" …).
FUZZ_CASES: collections.Counter[str] = collections.Counter()


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
    """At session end: the fuzz cases run, by family (the report sums them)."""
    path = os.environ.get("DRC_STRESS_REPORT")
    if path and FUZZ_CASES:
        with open(path, "a") as f:
            f.write(json.dumps({"fuzz_cases": dict(FUZZ_CASES)}) + "\n")
