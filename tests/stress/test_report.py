"""``make stress``'s table: each row is judged by its own tests (tests/stress/report.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location(
    "stress_report", Path(__file__).with_name("report.py")
)
assert spec is not None and spec.loader is not None
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

ENOUGH = {"fuzz_cases": {"tokens": report.FUZZ_TARGET - 1, "config files": 1}, "fuzz_failed": []}


def test_another_tests_failure_does_not_fail_the_fuzz_row():
    row = report.fuzz_row([ENOUGH, {"figure": "x", "ok": False}], rc=1)
    assert row["ok"] is True
    many = report.FUZZ_TARGET - 1
    assert row["measured"] == f"{report.FUZZ_TARGET} cases (config files 1, tokens {many})"


def test_a_failed_fuzz_test_too_few_cases_or_an_unfinished_run_fail_it():
    crashed = {"fuzz_cases": {"DRC link frames": 1}, "fuzz_failed": ["t.py::test_frames"]}
    row = report.fuzz_row([ENOUGH, crashed], rc=1)
    assert row["ok"] is False and row["measured"].endswith("; failed: t.py::test_frames")
    assert report.fuzz_row([{"fuzz_cases": {"tokens": 10}}], rc=0)["ok"] is False
    assert report.fuzz_row([ENOUGH], rc=124)["ok"] is False  # stopped by its timeout
