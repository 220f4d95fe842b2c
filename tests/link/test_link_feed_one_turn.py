"""A change reaches every parked poll before DRCS takes any node's next poll.

Each node polls again as soon as it heard a change, and DRCS decodes that poll on its munged
before dispatching it. Had the change log answered its parked polls a slice per loop turn, the
first nodes' next polls would be read and decoded between the slices, and the last node would
hear the change only after DRCS had decoded nearly every other node's next poll (the revoke
reaching 10,000 nodes in seconds). It answers a small first slice and then the rest in the
next turn (drc.server.changes.FAN_OUT). Here a real link server, a real munged and real
node-side link clients, all in one event loop, check the order.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import pytest
from test_link_shared_feed import Feed

from drc.link import LinkClient, Munge
from drc.server.changes import FAN_OUT, FIRST_SLICE, ChangeLog

from helpers import run_bounded

#: More polls than a slice of the old 500 a turn could answer before the first node's next
#: poll reached DRCS (six loop turns on one loop: 3,000).
NODES = 3_500


def test_the_design_size_s_parked_polls_are_answered_in_two_turns() -> None:
    async def body() -> None:
        log = ChangeLog()
        polls = [log.poll(log.generation, 0, 60) for _ in range(10_000)]
        answered_first: list[int] = []  # answered when the first one's callback ran
        rest_by_next_turn: list[bool] = []  # the last one answered by the turn after that

        def first(_future: asyncio.Future[Any]) -> None:
            answered_first.append(sum(p.done() for p in polls))
            asyncio.get_running_loop().call_soon(lambda: rest_by_next_turn.append(polls[-1].done()))

        polls[0].add_done_callback(first)
        log.record("revoked", 5, 2)
        await asyncio.wait_for(asyncio.gather(*polls), 10)
        assert FAN_OUT >= 10_000 - FIRST_SLICE  # the design size: two slices
        assert answered_first == [FIRST_SLICE]  # the first writes start after a small slice
        assert rest_by_next_turn == [True]  # and every other poll was answered in one turn

    run_bounded(body(), timeout=30)


class OrderedFeed(Feed):
    """The feed, noting how many first polls were answered when the first next poll came."""

    def __init__(self, munged: Any) -> None:
        super().__init__(munged)
        self.first: list[asyncio.Future[Any]] = []
        self.answered_at_next: int | None = None
        poll = self.log.poll

        def noting(generation: str, since: int, timeout: float) -> asyncio.Future[Any]:
            if since == 0:
                self.first.append(future := poll(generation, since, timeout))
                return future
            if self.answered_at_next is None:
                self.answered_at_next = sum(f.done() for f in self.first)
            return poll(generation, since, timeout)

        self.log.poll = noting  # type: ignore[method-assign]


def test_no_node_s_next_poll_is_taken_before_every_node_heard(munged) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if min(hard, 65536) < 2 * NODES + 256:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}: too low for {NODES} connections")
    if soft < 2 * NODES + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))

    async def body() -> None:
        feed = OrderedFeed(munged)
        async with feed.server:
            host, port = feed.server.tcp_address
            munge = Munge(munged.socket)  # one for every node: shared answers decode replayed
            # each from a loopback address of its own, as from its own host (DRCS bounds the
            # connections not yet authenticated per address)
            nodes = [
                LinkClient(
                    host,
                    port,
                    munge=munge,
                    server_uid=0,
                    timeout=90,
                    source=f"127.2.{i >> 8}.{i & 255}",
                )
                for i in range(1, NODES + 1)
            ]
            gen = feed.log.generation

            async def follow(node: LinkClient) -> None:
                (answer,) = await node.call("NodeWatch", [gen, 0, 60])
                assert answer == [gen, True, 1, [[5, 2]]]
                await node.call("NodeWatch", [gen, 1, 0])  # the next poll, at once

            try:
                following = [asyncio.create_task(follow(n)) for n in nodes]
                await feed.parked(NODES)
                feed.log.record("revoked", 5, 2)
                await asyncio.gather(*following)
            finally:
                await asyncio.gather(*(n.close() for n in nodes), return_exceptions=True)
            assert len(feed.first) == NODES
            assert feed.answered_at_next == NODES

    try:
        run_bounded(body(), timeout=120)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
