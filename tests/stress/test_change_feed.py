"""The change feed's log answers each follower with exactly the changes it has not seen."""

from __future__ import annotations

import asyncio

from drc.core.model import FREED
from drc.server.changes import COALESCE, TICK, ChangeLog


def test_since_answers_only_newer_changes_in_order_even_from_a_full_log():
    log = ChangeLog(keep=1000)
    for cred in range(1, 2501):  # more than the log keeps: the oldest aged out
        log.record("freed" if cred % 2 else "revoked", cred, 7)
    assert log.since(log.seq) == (True, [])
    assert log.since(log.seq - 2) == (True, [(2499, FREED), (2500, 7)])
    complete, changes = log.since(1500)  # the oldest change still kept
    assert complete and [c for c, _ in changes] == list(range(1501, 2501))
    complete, changes = log.since(10)  # aged out: the follower must resynchronise
    assert not complete and len(changes) == 1000


def test_polls_are_answered_by_a_change_a_timeout_or_a_new_generation():
    async def body() -> None:
        log = ChangeLog()
        loop = asyncio.get_running_loop()
        gen = log.generation
        waiting = log.poll(gen, 0, 60)
        other = log.poll("an old generation", 0, 60)
        assert other.done() and other.result() == (gen, False, 0, [])
        await asyncio.sleep(0.05)
        assert not waiting.done() and log.followers == 1
        started = loop.time()
        log.record("revoked", 5, 3)
        log.record("freed", 6, 0)  # the same burst: one answer carries both
        assert await waiting == (gen, True, 2, [(5, 3), (6, FREED)])
        assert loop.time() - started >= COALESCE * 0.9
        behind = log.poll(gen, 1, 60)  # a node that missed one: answered without waiting
        assert await asyncio.wait_for(behind, 1) == (gen, True, 2, [(6, FREED)])

        quiet = log.poll(gen, 2, 1)
        started = loop.time()
        assert await asyncio.wait_for(quiet, 5) == (gen, True, 2, [])
        assert 0.9 <= loop.time() - started <= 1 + 2 * TICK

        gone, staying = log.poll(gen, 2, 60), log.poll(gen, 2, 60)
        gone.cancel()  # its node went
        assert log.followers == 1
        log.new_generation()
        new = await asyncio.wait_for(staying, 1)
        assert new[0] != gen and new[0] == log.generation
        assert log.followers == 0

    asyncio.run(asyncio.wait_for(body(), 30))


def test_a_node_asking_from_an_old_seq_wakes_no_node_that_is_up_to_date():
    async def body() -> None:
        log = ChangeLog()
        gen = log.generation
        log.record("revoked", 5, 3)
        current = [log.poll(gen, 1, 60) for _ in range(3)]
        late = log.poll(gen, 0, 60)  # missed change 1: answered after the coalescing window
        assert await asyncio.wait_for(late, 1) == (gen, True, 1, [(5, 3)])
        await asyncio.sleep(COALESCE * 3)
        assert not any(p.done() for p in current) and log.followers == 3
        log.record("freed", 5, 0)
        answers = await asyncio.wait_for(asyncio.gather(*current), 1)
        assert answers == [(gen, True, 2, [(5, FREED)])] * 3
        assert log.followers == 0 and not log._ends  # answered polls leave their ticks

    asyncio.run(asyncio.wait_for(body(), 30))
