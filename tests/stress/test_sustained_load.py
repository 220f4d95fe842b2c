"""Sustained load through DRCC: many application processes, each a random mix of acquire,
cached access, grant and release. 4 x 150 operations under ``make test``; 64 x 10,000 under
``make stress``. Nothing may fail, no acknowledged reference may go missing, and when the
processes end the pool is exactly full again."""

from __future__ import annotations

import os
import time

import pytest

from cluster import Cluster
from scale import record, size
from workers import live_refs, pool_free, start_workers, stop_workers, store_problems

PROCESSES = size(4, 64)
OPERATIONS = size(150, 10_000)
SECONDS = size(120, 1500)  # each worker's own bound


def test_sustained_mixed_load_through_drcc(cluster: Cluster):
    if os.geteuid() != 0:
        pytest.skip("runs DRCS and DRCC as root")
    t0 = time.monotonic()
    workers = start_workers(cluster, PROCESSES, OPERATIONS, SECONDS)
    try:
        for w in workers:
            assert w.finished.wait(SECONDS + 60), "a worker neither finished nor died"
        seconds = time.monotonic() - t0
        live = live_refs(cluster)
        done = sum(w.done or 0 for w in workers)
        errors = [e for w in workers for e in w.errors]
        held = set().union(*(w.held for w in workers))
        lost = {c for c in held if live.get(c, 0) < 1}
        extra = set(live) - held  # nothing is in doubt without kills: exact
        free, capacity = pool_free(cluster)
        in_use = capacity - free
    finally:
        stop_workers(workers)
    deadline = time.monotonic() + 60
    while live_refs(cluster) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = live_refs(cluster)
    free_after, _ = pool_free(cluster)
    problems = store_problems(cluster)
    record(
        "sustained load through DRCC",
        "64 processes x 10,000 mixed operations: 0 errors, 0 lost references, pool exact",
        f"{PROCESSES} x {OPERATIONS}: {done} operations in {seconds:.0f} s "
        f"({done / seconds:.0f}/s), {len(errors)} errors, {len(lost)} lost, "
        f"pool {in_use} in use for {len(held)} held, {capacity - free_after} left after",
        PROCESSES >= 64
        and done == PROCESSES * OPERATIONS
        and not (errors or lost or extra or left or problems)
        and in_use == len(held)
        and free_after == capacity,
    )
    assert not errors, errors[:5]
    assert done == PROCESSES * OPERATIONS
    assert not lost and not extra
    assert in_use == len(held)  # one cookie per live credential, no more
    assert not left and free_after == capacity
    assert problems == []
