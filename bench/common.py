"""Shared by the benchmarks: an embedded drc to measure, latency statistics, CPU used."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from drc.embedded import cluster as embedded
from drc.embedded.postgres import fresh_database, private_postgresql


def cpu_seconds(pid: int) -> float:
    """User+system CPU time of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def embedded_drc(
    *, metrics: bool = False, servers: int = 1, database: str = ""
) -> Iterator[embedded.Embedded]:
    """The embedded drc; ``servers`` DRCS on ``database`` (a PostgreSQL URL) when > 1."""
    state = Path(tempfile.mkdtemp(prefix="drc-bench-", dir="/tmp"))
    try:
        yield embedded.start(state, metrics=metrics, servers=servers, database=database)
    finally:
        embedded.stop(state)
        shutil.rmtree(state, ignore_errors=True)


@contextlib.contextmanager
def postgresql_database() -> Iterator[str]:
    """A fresh database's URL: on the server ``DRC_BENCH_PG_URL`` names, else on a private
    throwaway PostgreSQL; dropped afterwards."""
    given = os.environ.get("DRC_BENCH_PG_URL")
    with contextlib.ExitStack() as stack:
        server = given.rsplit("/", 1)[0] if given else stack.enter_context(private_postgresql())
        yield stack.enter_context(fresh_database(server))


def timed(fn: Callable[[], object], n: int, warmup: int = 50) -> list[float]:
    """Per-call latencies in µs."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def summary(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "n": len(s),
        "p50_us": round(statistics.median(s), 1),
        "p99_us": round(s[min(len(s) - 1, int(len(s) * 0.99))], 1),
        "mean_us": round(statistics.fmean(s), 1),
    }


def interleaved(
    fns: dict[str, Callable[[], object]], n: int, chunk: int = 250
) -> dict[str, list[float]]:
    """Latencies of several calls measured in alternating chunks, so drift hits all alike."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        timed(fn, 0, warmup=50)
    while min(len(v) for v in out.values()) < n:
        for name, fn in fns.items():
            out[name] += timed(fn, min(chunk, n - len(out[name])), warmup=0)
    return out
