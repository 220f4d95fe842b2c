"""The cluster simulator (bench/bench_cluster.py) against one real DRCS: small under
``make test`` (correctness: nothing lost, everyone notified), 10,000 nodes under
``make stress`` (the issue's figures)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from scale import check_figures, record, run_bench, size

NODES = size(150, 10_000)


@pytest.fixture(scope="module")
def simulated() -> dict:
    if os.geteuid() != 0:
        pytest.skip("runs the embedded DRCS and munged as root")
    # it exits 1 when a figure missed its target: the rows below say which
    result = run_bench(
        "bench_cluster.py", "--nodes", str(NODES), timeout=size(180, 1200), check=False
    )
    for row in result["figures"]:
        record(**row)
    return result


def test_every_simulated_node_connects_accesses_and_hears_the_revoke(simulated: dict):
    assert simulated["errors"] == 0, simulated["error_samples"]
    assert simulated["connections"]["following_at_drcs"] == NODES
    assert simulated["connections"]["hello_and_follow_per_s"] > 0
    assert simulated["connections"]["drcs_kib_per_connection"] > 0
    assert simulated["access_storm"]["refs_after"] == NODES  # one reference per node
    revoke = simulated["revoke"]
    assert revoke["notified"] == NODES
    # the figure is when each node's link accepted the answer; its loop saw it no earlier
    assert revoke["first_ms"] <= revoke["p99_ms"] <= revoke["loop_p99_ms"]
    assert revoke["repolls"] == "deferred"
    # beside it, every node polled again at once with the poll sealed before (the owner made
    # other calls meanwhile, so its own was sealed when sent)
    at_once = simulated["revoke_next_polls_at_once"]
    assert at_once["notified"] == NODES and at_once["repolls"] == "presealed"
    assert at_once["repolls_presealed_used"] >= NODES - 1


def test_both_expire_forms_drop_the_job_on_every_node(simulated: dict):
    assert simulated["expire_drccli"]["references"] == NODES
    assert simulated["expire_drccli"]["refs_after"] == 0
    assert simulated["expire_per_node"]["refs_after"] == 0


def test_the_figures_are_reported_and_at_full_size_met(simulated: dict):
    check_figures(simulated["figures"], 6)


def test_drcs_raises_its_open_file_limit_to_the_hard_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(soft, 512)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    code = (
        "import resource\n"
        "from drc.server.main import SPARE_FDS, raise_fd_limit\n"
        "room = raise_fd_limit()\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "print(soft, hard, room, SPARE_FDS)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True
    ).stdout.split()
    new_soft, new_hard, room, spare = map(int, out)
    assert new_hard == hard and new_soft == hard
    assert room == hard - spare
