"""Application processes driving DRCC (tests/drcc_worker.py), and what DRCC acknowledged them.

The load and fault tests start N workers, let them run (killing daemons meanwhile), then read
each worker's acknowledged acquires and releases and compare them with DRCS.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from store_consistency import consistency_problems

from drc.store.database import open_database
from drc.store.sql import PeeweeStore

from cluster import Cluster

WORKER = Path(__file__).resolve().parent / "drcc_worker.py"


@dataclass
class Worker:
    proc: subprocess.Popen
    acked: set[int] = field(default_factory=set)
    released: set[int] = field(default_factory=set)
    sent: set[int] = field(default_factory=set)  # releases sent, answered or not
    errors: list[str] = field(default_factory=list)
    done: int | None = None
    finished: threading.Event = field(default_factory=threading.Event)

    def read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "A":
                self.acked.add(int(rest))
            elif kind == "r":
                self.sent.add(int(rest))
            elif kind == "R":
                self.released.add(int(rest))
            elif kind == "E":
                self.errors.append(rest)
            elif kind == "DONE":
                self.done = int(rest)
                self.finished.set()
        self.finished.set()

    @property
    def held(self) -> set[int]:
        """Acknowledged acquires not released (nor sent for release)."""
        return self.acked - self.sent

    @property
    def in_doubt(self) -> set[int]:
        return self.sent - self.released


def start_workers(cluster: Cluster, count: int, operations: int, seconds: float) -> list[Worker]:
    workers = []
    for i in range(count):
        proc = subprocess.Popen(
            ["/usr/bin/python3", str(WORKER), str(1000 + i), str(operations), str(seconds)],
            env=cluster.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        worker = Worker(proc)
        threading.Thread(target=worker.read, daemon=True).start()
        workers.append(worker)
    return workers


def stop_workers(workers: list[Worker]) -> None:
    """Let every worker go (their references end with them); by pid, even on failure."""
    for w in workers:
        with contextlib.suppress(OSError):
            os.kill(w.proc.pid, signal.SIGKILL)
    for w in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.proc.wait(30)


def live_refs(cluster: Cluster) -> dict[int, int]:
    """credential -> references, as DRCS lists them."""
    proxy = cluster.server()
    try:
        return {c["credential"]: c["refs"] for c in proxy.list()}
    finally:
        proxy.close()


def store_problems(cluster: Cluster) -> list[str]:
    store = PeeweeStore(open_database(f"sqlite:///{cluster.state_dir}/drcs.db"))
    try:
        return consistency_problems(store)
    finally:
        store.close()


def pool_free(cluster: Cluster) -> tuple[int, int]:
    """(free, capacity) of the cookie pool, as ``drccli status`` shows it."""
    proxy = cluster.server()
    try:
        pool = proxy.status()["provider"]
        return pool["free"], pool["capacity"]
    finally:
        proxy.close()
