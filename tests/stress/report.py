"""``make stress``: the load, fault and fuzz suite at the issue's full figures, as one table.

Runs the stress selection of the test suite with ``DRC_STRESS=full`` (each test appends the
figures it measured to a report file, see ``tests/scale.py``), then prints one table: figure,
target, measured, pass/fail. Exits 1 when any target was missed, any test failed, or a figure
is missing from the report (a test that died before measuring). Bounded: pytest is stopped
after ``DRC_STRESS_TIMEOUT`` seconds (default 1800).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FUZZ_TARGET = 100_000

#: What runs, and the figures it must report.
SELECTION = [
    "tests/stress",
    "tests/integration/test_crash.py",
    "tests/integration/test_bad_input.py",
    "tests/ha/test_ha_db_failover.py::"
    "test_primary_crash_and_promotion_lose_nothing_and_writes_resume_without_restarts",
    "tests/core/test_tokens.py",
    "tests/store/test_store.py::test_eight_processes_racing_acquire_never_exceed_the_limit",
    "tests/store/test_postgresql.py::"
    "test_eight_processes_racing_acquire_never_exceed_the_limit_on_postgresql",
    "tests/store/test_pg_locking.py",
]
EXPECTED = [
    "connect storm: 10000 nodes to one DRCS",
    "connect storm: 10000 nodes over 2 DRCS",
    "PostgreSQL access storm",
    "fail-over of 5000 nodes",
    "link connections held open by one DRCS",
    "access storm",
    "revoke reaching",
    "drccli expire",
    "per-node JobsEnded",
    "DRCS acquire+release over D-Bus",
    "a cache-miss access end to end (python)",
    "a cache-miss access end to end (libdrc)",
    "libdrc: 8 threads",
    "racing acquires under a limit (sqlite)",
    "racing acquires under a limit (postgresql)",
    "SIGKILL of DRCS",
    "SIGKILL of DRCC",
    "sustained load",
    "PostgreSQL fail-over",
    "acquire+release rate, 2 DRCS / 1 DRCS on PostgreSQL",
    "two DRCS racing on PostgreSQL",
]


def table(rows: list[dict]) -> str:
    head = ("figure", "target", "measured", "result")
    cells = [(r["figure"], r["target"], r["measured"], "pass" if r["ok"] else "FAIL") for r in rows]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(4)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join(out)


def fuzz_row(entries: list[dict], rc: int) -> dict:
    """The fuzz row: the cases every fuzz test ran, by family, judged by the fuzz tests alone
    (another test's failure is its own row's, and the suite's)."""
    cases: dict[str, int] = {}
    failed: list[str] = []
    for entry in entries:
        for family, n in entry.get("fuzz_cases", {}).items():
            cases[family] = cases.get(family, 0) + n
        failed += entry.get("fuzz_failed", [])
    total = sum(cases.values())
    detail = ", ".join(f"{family} {n}" for family, n in sorted(cases.items()))
    return {
        "figure": "fuzzed inputs (crashes and state changes fail their test)",
        "target": f">= {FUZZ_TARGET} cases, 0 crashes, 0 state changes",
        "measured": f"{total} cases ({detail})"
        + (f"; failed: {', '.join(failed)}" if failed else ""),
        # pytest's 1 says tests failed; any other status, that the run did not finish
        "ok": total >= FUZZ_TARGET and not failed and rc in (0, 1),
    }


def main() -> int:
    timeout = float(os.environ.get("DRC_STRESS_TIMEOUT", "1800"))
    fd, report = tempfile.mkstemp(prefix="drc-stress-", suffix=".jsonl")
    os.close(fd)
    env = {**os.environ, "DRC_STRESS": "full", "DRC_STRESS_REPORT": report}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SELECTION]
    t0 = time.monotonic()
    try:
        rc = subprocess.run(argv, cwd=REPO, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"make stress: stopped after {timeout:.0f} s", file=sys.stderr)
        rc = 124
    seconds = time.monotonic() - t0
    entries = [json.loads(line) for line in Path(report).read_text().splitlines()]
    os.unlink(report)
    rows = [entry for entry in entries if "fuzz_cases" not in entry]
    rows.append(fuzz_row(entries, rc))
    for name in EXPECTED:
        if not any(r["figure"].startswith(name) for r in rows):
            rows.append({"figure": name, "target": "measured", "measured": "MISSING", "ok": False})
    rows.append(
        {
            "figure": "stress suite (pytest)",
            "target": "all tests pass, <= 30 min",
            "measured": f"exit status {rc}, {seconds / 60:.1f} min",
            "ok": rc == 0 and seconds <= 1800,
        }
    )
    print()
    print(table(rows))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    failed = [r for r in rows if not r["ok"]]
    print(f"make stress: {len(rows) - len(failed)} of {len(rows)} figures met")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
