"""NodeMoved when thousands of nodes move at once (a DRCS of two failed, issue 22): the moves
that wait are gathered into one call of the store thread, run ahead of a storm of accesses
queued there, one transaction for all of them, and each still answers its own node (its
epochs, the feed position) or refuses it alone. On SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from drc.core.errors import Code, DrcError
from drc.core.model import FREED
from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.export import PeerCredentials
from drc.providers.pool import PoolProvider
from drc.server.exports import ServerExports
from drc.server.group import GroupCommit
from drc.store.sql import PeeweeStore

from helpers import ALICE, in_job

NODE_DAEMON = PeerCredentials(uid=0, gids=frozenset({0}), pid=0, sender="link:127.0.0.1:1")
MOVED_TO = "10.0.0.2:7000"


@pytest.fixture(params=["sqlite", "postgresql"])
def both(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[CredentialService]:
    """A service on SQLite, then on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        store = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db")
    else:
        store = PeeweeStore.from_url(request.getfixturevalue("postgresql_url"))
    try:
        pool = PoolProvider(cookie_min=1000, cookie_max=1099, ptag=7)
        yield CredentialService(store, pool, Policy(persistent_uids=frozenset({ALICE})))
    finally:
        store.close()


def threaded(service: CredentialService, max_batch: int = 256) -> ServerExports:
    """DRCS's exports with drcs's group commit: one store thread."""
    exports = ServerExports(service)
    exports.group = GroupCommit(service.store, max_batch, threaded=True, timeout=30)
    return exports


def test_moves_arriving_together_share_one_transaction_each_answered_its_own(
    both: CredentialService, monkeypatch: pytest.MonkeyPatch
):
    service = both
    live = service.acquire(in_job(ALICE, 10), 0).id
    gone = service.acquire(in_job(ALICE, 10), 0).id
    service.release(in_job(ALICE, 10), gone)
    exports = threaded(service)
    transactions = []
    nodes_moved = service.nodes_moved

    def counted(moves: Any, unit: Any = None) -> dict[int, int]:
        moves = list(moves)
        transactions.append(len(moves))
        return nodes_moved(moves, unit)

    monkeypatch.setattr(service, "nodes_moved", counted)

    async def move_all() -> list[Any]:
        calls = [
            exports.nodes.node_moved(NODE_DAEMON, f"n{i}", MOVED_TO, [live] if i % 2 else [gone])
            for i in range(300)
        ]
        # the same node again (a retry): it counts once, as its last move
        calls.append(exports.nodes.node_moved(NODE_DAEMON, "n0", MOVED_TO, [live, gone]))
        return await asyncio.wait_for(asyncio.gather(*calls), 30)

    try:
        answers = asyncio.run(move_all())
    finally:
        exports.group.close()
    assert transactions == [301]  # every move waiting, in one call and one transaction
    epoch = service.epochs([live])[live]
    for i, (generation, seq, epochs) in enumerate(answers[:300]):
        assert (generation, seq) == (exports.changes.generation, exports.changes.seq)
        assert epochs == ([(live, epoch)] if i % 2 else [(gone, FREED)])
    assert answers[300][2] == [(live, epoch), (gone, FREED)]
    following = {n: s for n, s, _ in service.node_servers()}
    assert len(following) == 300 and set(following.values()) == {MOVED_TO}


def test_moves_and_a_storm_queued_on_the_store_thread_take_turns(both: CredentialService):
    """Moves made while 100 accesses wait run right after the batch running, not after all
    of them; moves that keep coming do not starve the accesses either: each later gathered
    call of moves waits for the next batch of accesses (16 here)."""
    service = both
    exports = threaded(service, max_batch=16)
    group = exports.group
    assert group is not None
    order: list[str] = []

    def slow_access(_batch: Any) -> None:
        time.sleep(0.005)  # an access's share of a batch under load, on the store thread
        order.append("access")

    async def storm_and_moves() -> None:
        blocker = group.alone(lambda _b: time.sleep(0.2))  # the batch the thread runs now
        await asyncio.sleep(0.05)
        storm = [group.submit(slow_access) for _ in range(100)]
        moves: list[asyncio.Future[Any]] = []
        for wave in range(3):  # moves keep coming while the storm is served
            for i in range(20):
                move = exports.nodes.node_moved(NODE_DAEMON, f"n{wave}-{i}", MOVED_TO, [])
                move.add_done_callback(lambda _f: order.append("moved"))
                moves.append(move)
            await asyncio.wait_for(asyncio.gather(*moves), 30)  # the next wave comes after
        await asyncio.wait_for(asyncio.gather(blocker, *storm), 30)

    try:
        asyncio.run(storm_and_moves())
    finally:
        group.close()
    assert order.count("access") == 100 and order.count("moved") == 60
    # the first wave right behind the batch running (not behind the storm); each later
    # wave, made once the last is answered, behind the next batch of accesses: turns
    turns = (["moved"] * 20 + ["access"] * 16) * 2 + ["moved"] * 20
    assert order == turns + ["access"] * (100 - 32), order


def test_moves_that_keep_coming_take_at_most_their_share_of_the_store_thread(
    both: CredentialService, monkeypatch: pytest.MonkeyPatch
):
    """Each gathered call of moves takes 0.15 s and moves keep arriving for 1.5 s: were they
    always next, no access would run until they stopped. Past their share of the store
    thread's time (SOON_SHARE), each waits behind a batch of accesses, so the storm ends
    while the moves still come."""
    service = both
    exports = threaded(service, max_batch=16)
    group = exports.group
    assert group is not None
    nodes_moved = service.nodes_moved

    def slow(moves: Any, unit: Any = None) -> dict[int, int]:
        time.sleep(0.15)
        return nodes_moved(moves, unit)

    monkeypatch.setattr(service, "nodes_moved", slow)
    done: dict[str, float] = {}

    def access(_batch: Any) -> None:
        time.sleep(0.01)

    async def storm_and_moves() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        moves = [exports.nodes.node_moved(NODE_DAEMON, "n0", MOVED_TO, [])]
        await asyncio.sleep(0.01)  # the first call of moves runs now
        storm = [group.submit(access) for _ in range(32)]
        storm[-1].add_done_callback(lambda _f: done.setdefault("storm", loop.time()))
        for i in range(1, 150):  # a move every 10 ms for 1.5 s
            moves.append(exports.nodes.node_moved(NODE_DAEMON, f"n{i}", MOVED_TO, []))
            await asyncio.sleep(0.01)
        done["moves_made"] = loop.time()
        await asyncio.wait_for(asyncio.gather(*storm, *moves), 30)
        done["started"] = started

    try:
        asyncio.run(storm_and_moves())
    finally:
        group.close()
    assert done["storm"] < done["moves_made"], done  # not starved while moves kept coming
    assert len(service.node_servers()) == 150


def test_a_bad_move_is_refused_alone_and_the_others_recorded(both: CredentialService):
    service = both
    exports = threaded(service)

    async def moves() -> list[Any]:
        good = exports.nodes.node_moved(NODE_DAEMON, "n1", MOVED_TO, [])
        with pytest.raises(DrcError) as bad:
            exports.nodes.node_moved(NODE_DAEMON, "n2", "", [])
        assert bad.value.code is Code.EINVAL
        with pytest.raises(DrcError) as bad:
            exports.nodes.node_moved(NODE_DAEMON, "n3", MOVED_TO, [1 << 32])
        assert bad.value.code is Code.EINVAL
        return await asyncio.wait_for(asyncio.gather(good), 30)

    try:
        asyncio.run(moves())
    finally:
        exports.group.close()
    assert [(n, s) for n, s, _ in service.node_servers()] == [("n1", MOVED_TO)]


def test_moves_failing_in_the_store_are_all_answered_the_error(
    both: CredentialService, monkeypatch: pytest.MonkeyPatch
):
    """A transaction that fails answers every move it took (the nodes retry), and the next
    moves run again."""
    service = both
    exports = threaded(service)
    nodes_moved = service.nodes_moved
    failures = [DrcError(Code.ECONNREFUSED, "the database went away")]

    def flaky(moves: Any, unit: Any = None) -> dict[int, int]:
        if failures:
            raise failures.pop()
        return nodes_moved(moves, unit)

    monkeypatch.setattr(service, "nodes_moved", flaky)

    async def moves() -> tuple[list[Any], Any]:
        first = [exports.nodes.node_moved(NODE_DAEMON, f"n{i}", MOVED_TO, []) for i in range(5)]
        failed = await asyncio.gather(*first, return_exceptions=True)
        again = await asyncio.wait_for(
            exports.nodes.node_moved(NODE_DAEMON, "n0", MOVED_TO, []), 30
        )
        return failed, again

    try:
        failed, again = asyncio.run(moves())
    finally:
        exports.group.close()
    assert all(isinstance(e, DrcError) and e.code is Code.ECONNREFUSED for e in failed)
    assert again[0] == exports.changes.generation
    assert [(n, s) for n, s, _ in service.node_servers()] == [("n0", MOVED_TO)]


@pytest.mark.parametrize("stuck", ["before", "during"])
def test_moves_are_all_answered_when_the_store_does_not_answer_in_time(
    both: CredentialService, monkeypatch: pytest.MonkeyPatch, stuck: str
):
    """The group gives up on the call of the moves (its store timeout): queued behind a batch
    that outlived it, or running past it. Every move is answered (ECONNREFUSED: the node
    retries), none waits for an answer nobody gives, and later moves run again."""
    service = both
    exports = ServerExports(service)
    group = exports.group = GroupCommit(service.store, threaded=True, timeout=0.3)
    nodes_moved = service.nodes_moved
    slow = [0.6] if stuck == "during" else []

    def slowed(moves: Any, unit: Any = None) -> dict[int, int]:
        if slow:
            time.sleep(slow.pop())  # past the store timeout while it runs
        return nodes_moved(moves, unit)

    monkeypatch.setattr(service, "nodes_moved", slowed)

    async def moves() -> tuple[list[Any], Any]:
        blocker = None
        if stuck == "before":
            blocker = group.alone(lambda _b: time.sleep(0.6))  # the store stuck meanwhile
            await asyncio.sleep(0.05)
        first = [exports.nodes.node_moved(NODE_DAEMON, f"n{i}", MOVED_TO, []) for i in range(5)]
        failed = await asyncio.wait_for(asyncio.gather(*first, return_exceptions=True), 5)
        if blocker is not None:
            await asyncio.gather(blocker, return_exceptions=True)
        await asyncio.sleep(0.7)  # the stuck transaction ends
        again = await asyncio.wait_for(exports.nodes.node_moved(NODE_DAEMON, "n9", MOVED_TO, []), 5)
        return failed, again

    try:
        failed, again = asyncio.run(moves())
    finally:
        group.close()
    assert all(isinstance(e, DrcError) and e.code is Code.ECONNREFUSED for e in failed), failed
    assert again[0] == exports.changes.generation
    assert "n9" in {n for n, _s, _t in service.node_servers()}
