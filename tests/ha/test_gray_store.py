"""Gray failures of the store: the database stops answering, DRCS does not.

A real SQLite file locked by another process, a real PostgreSQL table locked by another
session, and real PostgreSQL backends stopped with SIGSTOP: DRCS's status answers within a
second and says the store is not answering, changes fail with ECONNREFUSED naming the
database before the caller's deadline, nothing is half-applied, and DRCS recovers without a
restart once the database answers again.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from multinode import MultiNode

from drc import config
from drc.core.errors import Code, DrcError
from drc.embedded.polling import wait_for
from drc.nodeverbs import WATCH_HEARTBEAT, WATCH_MARGIN
from drc.serverclient import ServerProxy

from cluster import Cluster, start_cluster, stop_cluster

STORE_TIMEOUT = 2.0  # [server] store_timeout's default
JOB = 4711


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result or the DrcError raised) of one call."""
    started = time.monotonic()
    try:
        result: Any = call()
    except DrcError as e:
        result = e
    return time.monotonic() - started, result


def refused(result: Any, *words: str) -> None:
    assert isinstance(result, DrcError), result
    assert result.code is Code.ECONNREFUSED, result
    for word in words:
        assert word in result.message, result.message


def store_of(server: ServerProxy) -> dict[str, Any]:
    took, status = timed(server.status)
    assert took < 1.0, f"status took {took:.2f} s"
    return status["store"]


def credentials(server: ServerProxy) -> set[int]:
    return {c["credential"] for c in server.list()}


@pytest.fixture
def metered(runtime: Any, users: Any) -> Iterator[Cluster]:
    """The embedded cluster (SQLite store) with DRCS's metrics on."""
    c = start_cluster(runtime, metrics=True)
    try:
        yield c
    finally:
        stop_cluster(c)


def store_up(cluster: Cluster) -> tuple[float, float]:
    samples = cluster.scrape("drcs")
    return (
        samples["drcs_store_up"][()],
        samples["drcs_store_unanswered_seconds"][()],
    )


def test_a_sqlite_store_locked_by_another_process_refuses_then_recovers(metered: Cluster):
    cluster = metered
    server = cluster.server()
    assert store_up(cluster) == (1.0, 0.0)
    before = credentials(server)
    path = store_of(server)["database"]
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        took, result = timed(server.acquire)
        refused(result, f"sqlite:///{path}", "locked")
        assert took < STORE_TIMEOUT, f"acquire took {took:.2f} s"
        store = store_of(server)
        assert store["answering"] is False and store["since"] > 0, store
        up, unanswered = store_up(cluster)
        assert up == 0.0 and unanswered > 0
        took, result = timed(server.acquire)
        refused(result, "locked")
        assert took < STORE_TIMEOUT
        out = cluster.drccli(None, "status", timeout=10).stdout
        assert "NOT ANSWERING since" in out and "locked" in out, out
    finally:
        other.execute("ROLLBACK")
        other.close()
    made = server.acquire()  # no restart: the next change goes through
    assert store_of(server)["answering"] is True
    assert store_up(cluster) == (1.0, 0.0)
    assert credentials(server) == before | {made}  # the refused ones left nothing
    out = cluster.drccli(None, "status", check=True).stdout
    assert "Store:" in out and "NOT ANSWERING" not in out, out


def database_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


@contextmanager
def admin_session(url: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


def test_a_postgresql_table_lock_held_elsewhere_refuses_in_time_then_recovers(
    two_nodes: MultiNode,
):
    c = two_nodes
    server = c.server(1)
    before = credentials(server)
    with admin_session(c.database) as other:
        other.execute("BEGIN")
        other.execute('LOCK TABLE "credential" IN ACCESS EXCLUSIVE MODE')  # every acquire writes it
        try:
            took, result = timed(server.acquire)
            refused(result, "PostgreSQL", database_name(c.database), "lock")
            assert took < STORE_TIMEOUT, f"acquire took {took:.2f} s"
            assert "postgres@" not in result.message  # users and passwords stay out
            store = store_of(server)
            assert store["answering"] is False and store["since"] > 0, store
        finally:
            other.execute("ROLLBACK")
    made = server.acquire()
    assert store_of(server)["answering"] is True
    assert credentials(server) == before | {made}


def backends(admin: Any, database: str) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (database,),
    ).fetchall()
    return [pid for (pid,) in rows]


def test_stopped_postgresql_backends_stall_no_drcs_and_nothing_commits_late(
    two_nodes: MultiNode, postgresql_server: str
):
    """SIGSTOP of every PostgreSQL process serving the store: the transaction DRCS had sent
    never answers (no server-side timeout can fire). DRCS answers it "outcome unknown" at its
    deadline, refuses the next change at once, keeps answering status, and rolls the stuck
    transaction back when the database wakes: it never commits after being answered."""
    c = two_nodes
    server = c.server(1)
    cached = int(c.task(1, JOB, "alice", "print(client.acquire(0))"))  # node 1 caches it
    before = credentials(server)
    with admin_session(f"{postgresql_server}/postgres") as admin:
        stopped = backends(admin, database_name(c.database))
        assert stopped, "DRCS holds connections to its database"
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            took, result = timed(server.acquire)
            refused(result, database_name(c.database), "outcome")
            assert STORE_TIMEOUT - 0.1 < took < STORE_TIMEOUT + 1.0, f"took {took:.2f} s"
            took, result = timed(server.acquire)  # the store is stuck: refused at once
            refused(result, "has not answered for")
            assert took < 0.5, f"took {took:.2f} s"
            store = store_of(server)
            assert store["answering"] is False and store["unanswered_seconds"] > 0, store
            # the node answers what it holds alone: another process of the job accesses
            code = f"import time; t = time.monotonic(); client.access({cached}); "
            code += "print(round(time.monotonic() - t, 3))"
            assert float(c.task(1, JOB, "alice", code)) < 0.5
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
    wait_for(lambda: store_of(server)["answering"], 15, what="DRCS to see its store again")
    assert credentials(server) == before  # the stuck acquire rolled back
    made = server.acquire()
    assert credentials(server) == before | {made}


def test_an_idle_node_leaves_a_silent_drcs_within_the_heartbeat(two_nodes: MultiNode):
    """DRCS 1 hangs (SIGSTOP: its sockets stay open, nothing answers) while node 1, which
    follows it, makes no call at all: the change feed's heartbeat stops, and node 1 follows
    DRCS 2 within WATCH_HEARTBEAT + WATCH_MARGIN (+ a tick), not after a 35 s long poll."""
    c = two_nodes
    one, two = c.emb.servers
    assert config.defaults()["link"]["heartbeat"] == WATCH_HEARTBEAT  # what the nodes use
    bound = WATCH_HEARTBEAT + WATCH_MARGIN + 1.5

    def follows() -> dict[str, str]:
        status = c.server(2).status()
        return {entry["node"]: entry["server"] for entry in status["nodes_following"]}

    assert follows()["node1"] == one
    c.kill_server(1, signal.SIGSTOP)
    try:
        started = time.monotonic()
        wait_for(lambda: follows()["node1"] == two, bound + 5, what="node1 to follow DRCS 2")
        took = time.monotonic() - started
    finally:
        c.kill_server(1, signal.SIGCONT)
    assert took < bound, f"node1 noticed its silent DRCS after {took:.1f} s"
