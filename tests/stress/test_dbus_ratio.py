"""DRCS acquire+release over D-Bus ÷ the raw store's rate, measured side by side in one run
by bench/bench_drcs.py (small under ``make test``; judged at full size under ``make stress``)."""

from __future__ import annotations

import os

import pytest

from scale import FULL, record, run_bench, size


def test_dbus_acquire_release_keeps_up_with_the_store():
    if os.geteuid() != 0:
        pytest.skip("runs the embedded DRCS as root")
    env = {
        **os.environ,
        "DRC_BENCH_N": str(size(50, 1000)),
        "DRC_BENCH_PAIRS": str(size(150, 3000)),
    }
    pairs = run_bench("bench_drcs.py", env=env, timeout=size(120, 600))["acquire_release_pairs"]
    ratio = pairs["dbus_vs_store"]
    record(
        "DRCS acquire+release over D-Bus / raw store rate",
        ">= 0.8 (same run)",
        f"{ratio} ({pairs['dbus_pairs_per_s']} vs {pairs['store_pairs_per_s']} pairs/s, "
        f"{pairs['clients']} D-Bus clients; CPU per pair: DRCS {pairs['drcs_cpu_us_per_pair']} us, "
        f"raw store {pairs['store_cpu_us_per_pair']} us)",
        ratio >= 0.8,
    )
    assert 0 < ratio < 10 and pairs["pairs"] > 0
    assert pairs["drcs_cpu_us_per_pair"] > 0 and pairs["store_cpu_us_per_pair"] > 0
    if FULL:  # a small run is mostly warm-up: the rate is judged at full size only
        assert ratio >= 0.8, pairs
