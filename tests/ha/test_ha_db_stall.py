"""The database stalled without dying: DRCS answers status, refuses changes in time naming the
database, nodes go on from their caches, and everything recovers by itself, with nothing lost or
doubled. Three stalls, on a real PostgreSQL primary with its synchronous standby:

- the primary SIGSTOPped whole (alive, sockets open, answering nothing);
- a TCP proxy between DRCS and the primary that stops forwarding (a half-open connection);
- the synchronous standby lost, or the standby promoted with the primary's list of
  synchronous standbys: every COMMIT waits, until the admin clears
  ``synchronous_standby_names`` (drcs(8) HIGH AVAILABILITY).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from multinode import MultiNode, multinode
from store_consistency import consistency_problems
from tcp_proxy import PausableProxy

from drc.core.errors import Code, DrcError
from drc.embedded.polling import wait_for
from drc.embedded.postgres import ReplicatedPostgresql
from drc.embedded.runtime import Runtime

from cluster import User

JOB = 600
CALLER = {"uid": 1000, "gid": 1000, "gids": [], "pid": 0, "job": 9, "node": "n1"}
LINK_TIMEOUT = 5.0  # [link] timeout: a node's call must have its answer before this
STATUS_WITHIN = 1.0


def store_answering(status: dict[str, Any]) -> bool:
    return status["store"]["answering"]


def status_in_time(c: MultiNode) -> dict[str, Any]:
    """DRCS's status, which must come within STATUS_WITHIN whatever the database does."""
    server = c.server(1)
    try:
        t0 = time.monotonic()
        status = server.call("Status", "")[0]
        took = time.monotonic() - t0
    finally:
        server.close()
    assert took < STATUS_WITHIN, f"status took {took:.2f} s"
    return status


def refused_in_time(c: MultiNode, rid: str) -> DrcError:
    """An acquire over the link while the database does not answer: the error, which must
    come before the node's deadline."""
    with c.link(1, timeout=LINK_TIMEOUT + 5) as link:
        t0 = time.monotonic()
        with pytest.raises(DrcError) as e:
            link.call("NodeAcquire", [CALLER, 0], rid=rid)
        took = time.monotonic() - t0
    assert took < LINK_TIMEOUT, f"the refusal took {took:.2f} s"
    return e.value


def stuck_commit(c: MultiNode, prefix: str) -> str:
    """The request id of an acquire whose COMMIT got stuck (answered "outcome unknown"). The
    first tries after a crash may instead find the dead connection: refused, nothing run."""
    for n in range(3):
        rid = f"{prefix}-{n}"
        error = refused_in_time(c, rid)
        assert error.code is Code.ECONNREFUSED and "database" in error.message, error
        if "unknown" in error.message:
            return rid
    raise AssertionError(f"no commit got stuck; last refusal: {error}")


def retried_once(c: MultiNode, rid: str) -> int:
    """The same request retried until the database answers again (bounded): its credential."""
    got: list[int] = []

    def answered() -> bool:
        try:
            with c.link(1, timeout=10) as link:
                got.append(link.call("NodeAcquire", [CALLER, 0], rid=rid)[0]["credential"])
            return True
        except DrcError as e:
            assert e.code is Code.ECONNREFUSED, e
            return False

    wait_for(answered, 30, what="DRCS to serve again", interval=0.2)
    return got[0]


def assert_exact(c: MultiNode, expected: set[int]) -> None:
    store = c.store()
    try:
        with store.snapshot() as tx:
            assert {x.id for x in tx.list_credentials()} == expected  # nothing lost or doubled
            assert tx.slots_in_use("pool") == len(expected)
        assert consistency_problems(store) == []
    finally:
        store.close()


@pytest.fixture(params=["sigstop", "proxy"])
def stalled(
    request: pytest.FixtureRequest,
    runtime: Runtime,
    users: dict[str, User],
    postgresql_pair: ReplicatedPostgresql,
) -> Iterator[tuple[MultiNode, Callable[[], None], Callable[[], None], str]]:
    """A node and a DRCS on the pair's primary, and how to stall and resume the database:
    (cluster, stall, resume, what an error message must name)."""
    pair = postgresql_pair
    with contextlib.ExitStack() as stack:
        if request.param == "proxy":
            proxy = stack.enter_context(PausableProxy(pair.hosts[0]))
            url = f"postgresql://postgres@{proxy.address}/drc"
            stall, resume, where = proxy.pause, proxy.resume, proxy.address
        else:
            url = pair.url("drc")
            stall, resume = (lambda: pair.stall(0)), (lambda: pair.resume(0))
            where = f"{pair.hosts[0][0]}:{pair.hosts[0][1]}"
        c = stack.enter_context(multinode(runtime, url, nodes=1, servers=1))
        try:
            yield c, stall, resume, where
        finally:
            resume()


def test_a_stalled_database_gets_status_and_refusals_in_time_and_recovers_by_itself(
    stalled: tuple[MultiNode, Callable[[], None], Callable[[], None], str],
):
    c, stall, resume, where = stalled
    drcs = c.emb.server_pid(1)
    kept = int(c.task(1, JOB, "alice", "print(client.acquire(0))"))
    assert store_answering(status_in_time(c))
    stall()
    try:
        error = refused_in_time(c, "stall-1")
        assert error.code is Code.ECONNREFUSED and "database" in error.message, error
        assert where in error.message, error  # which component to look at
        status = status_in_time(c)
        assert not store_answering(status), status["store"]
        error = refused_in_time(c, "stall-2")  # refused at once now: the store is known silent
        assert error.code is Code.ECONNREFUSED, error
        # the node answers what it has cached without DRCS's store
        t0 = time.monotonic()
        c.task(1, JOB, "alice", f"client.access({kept})")
        assert time.monotonic() - t0 < LINK_TIMEOUT
    finally:
        resume()
    first = retried_once(c, "stall-1")  # ran once, or now: either way exactly once
    assert retried_once(c, "stall-1") == first
    wait_for(lambda: store_answering(status_in_time(c)), 10, what="status to say it answers")
    assert c.emb.server_pid(1) == drcs  # no restart
    assert_exact(c, {kept, first})


@pytest.fixture
def replicated_one(
    runtime: Runtime, users: dict[str, User], postgresql_pair: ReplicatedPostgresql
) -> Iterator[MultiNode]:
    with multinode(runtime, postgresql_pair.url("drc"), nodes=1, servers=1) as c:
        yield c


@pytest.mark.parametrize("how", ["standby lost", "promoted without clearing"])
def test_commits_waiting_for_a_synchronous_standby_are_refused_then_done_once_when_cleared(
    replicated_one: MultiNode, postgresql_pair: ReplicatedPostgresql, how: str
):
    """Every COMMIT waits for a synchronous standby that is not there (SyncRep): the primary's
    standby crashed, or the standby was promoted without the documented step, so it waits for
    a standby of its own. DRCS refuses in time and says so; once the admin clears
    synchronous_standby_names, the retried request finds its change, made once."""
    c, pair = replicated_one, postgresql_pair
    kept = int(c.task(1, JOB, "alice", "print(client.acquire(0))"))
    if how == "standby lost":
        pair.crash(1)
        primary = 0
    else:
        pair.crash(0)
        pair.promote(1, clear_synchronous=False)  # the trap drcs(8) warns of
        primary = 1
    rid = stuck_commit(c, "syncrep")
    assert not store_answering(status_in_time(c))
    pair.clear_synchronous_standbys(primary)  # the admin's step; a waiting COMMIT completes
    first = retried_once(c, rid)
    assert retried_once(c, rid) == first
    wait_for(lambda: store_answering(status_in_time(c)), 10, what="status to say it answers")
    assert_exact(c, {kept, first})


def test_a_hung_primary_fenced_and_replaced_by_its_standby_is_left_behind(
    replicated_one: MultiNode, postgresql_pair: ReplicatedPostgresql
):
    """The primary hangs (SIGSTOP: alive, its sockets open), then a manager promotes the
    standby and fences the old primary (kills it, so it can never answer as a second primary):
    DRCS goes on with the new primary, without a restart; the request it answered "outcome
    unknown" acts once."""
    c, pair = replicated_one, postgresql_pair
    drcs = c.emb.server_pid(1)
    kept = int(c.task(1, JOB, "alice", "print(client.acquire(0))"))
    pair.stall(0)
    try:
        error = refused_in_time(c, "hung-1")
        assert error.code is Code.ECONNREFUSED and "database" in error.message, error
        pair.promote(1)
    finally:
        pair.kill(0)  # fenced
    first = retried_once(c, "hung-1")
    assert retried_once(c, "hung-1") == first
    wait_for(lambda: store_answering(status_in_time(c)), 10, what="status to say it answers")
    assert c.emb.server_pid(1) == drcs
    assert_exact(c, {kept, first})
