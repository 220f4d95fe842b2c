"""Several DRCS on PostgreSQL add throughput: acquire+release pairs per second with the same
callers spread over 2 DRCS ÷ all on 1, measured in alternating rounds of one run by
bench/bench_failover.py --rate (small under ``make test``; judged at full size under
``make stress``)."""

from __future__ import annotations

import os

import pytest

from scale import FULL, record, run_bench, size

TARGET = 1.3


def test_two_drcs_on_postgresql_serve_more_than_one():
    if os.geteuid() != 0:
        pytest.skip("runs the embedded cluster (munged, PostgreSQL) as root")
    args = ("--rate", "--rounds", str(size(1, 4)), "--pairs", str(size(64, 300)))
    rate = run_bench("bench_failover.py", *args, timeout=size(300, 900))
    pairs = rate["acquire_release_rate_postgresql"]
    ratio = pairs["two_vs_one"]
    best = pairs["per_second_best"]
    record(
        "acquire+release rate, 2 DRCS / 1 DRCS on PostgreSQL",
        f">= {TARGET} (same callers, same run)",
        f"{ratio} ({best['2 servers']} vs {best['1 server']} pairs/s, best of "
        f"{pairs['rounds']} alternating rounds, by round {pairs['two_vs_one_by_round']}, "
        f"{pairs['concurrency']} callers, {pairs['errors']} errors)",
        ratio >= TARGET and pairs["errors"] == 0,
    )
    assert pairs["errors"] == 0, pairs
    assert best["1 server"] > 0 and best["2 servers"] > 0
    if FULL:  # a small run is mostly warm-up: the ratio is judged at full size only
        assert ratio >= TARGET, pairs
