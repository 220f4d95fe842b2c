"""libdrc from 8 threads of one process ÷ 8 threads with a raw sd-bus connection each, measured
side by side in one run by bench/bench_clib.py (small under ``make test``; judged at full
size under ``make stress``)."""

from __future__ import annotations

import os
import shutil

import pytest

from scale import FULL, record, run_bench, size


def test_eight_threads_through_libdrc_keep_up_with_a_raw_connection_each():
    if os.geteuid() != 0:
        pytest.skip("runs the embedded drc as root")
    if shutil.which("cc") is None or shutil.which("pkg-config") is None:
        pytest.skip("needs cc and pkg-config (make deps installs them)")
    seconds = size(1, 5)
    result = run_bench(
        "bench_clib.py",
        "--samples",
        str(size(200, 2000)),
        "--seconds",
        str(seconds),
        timeout=size(180, 600),
    )
    pooled = result["threads_8_libdrc_pool"]["calls_per_s"]
    raw = result["threads_8_raw_connection_per_thread"]["calls_per_s"]
    ratio = result["threads_8_ratio_libdrc_to_raw"]
    record(
        "libdrc: 8 threads, cached drc_access / a raw connection each",
        ">= 0.8 (same run)",
        f"{ratio} ({pooled} vs {raw} calls/s over {seconds} s each)",
        ratio >= 0.8,
    )
    assert pooled > 0 and raw > 0
    if FULL:  # a one-second run is mostly warm-up: the ratio is judged at full size only
        assert ratio >= 0.8, result
