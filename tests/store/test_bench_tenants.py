"""bench/bench_tenants.py at a small size: it runs, compares the two schemas it claims to
(0006 undone and as migrated), and each uses the plan it is meant to show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parent.parent.parent / "bench"


def test_the_tenant_bench_compares_the_schema_before_and_after_0006():
    small = {"DRC_BENCH_REFS": "300", "DRC_BENCH_CALLS": "20", "DRC_BENCH_ACCESSES": "10"}
    out = subprocess.run(
        [sys.executable, "bench_tenants.py"],
        cwd=BENCH,
        env={**os.environ, **small},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    result = json.loads(out)
    assert result["refs"] == 300
    assert "reference_credential_id_node" not in result["before_0006"]["plan"]
    assert "(credential_id=? AND node=?)" in result["after_0006"]["plan"]
    for side in ("before_0006", "after_0006"):
        assert result[side]["access_miss_per_s_300_refs"] > 0
    assert result["before_over_after"] > 0
