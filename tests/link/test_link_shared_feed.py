"""The change feed's shared answers, as an attacker on the network meets them.

DRCS seals one feed answer for every node it answers alike and sends the same bytes to each,
the request id outside the seal (drc.link.protocol, shared answers). These tests run a real
change log behind a real link server, a real munged and real node-side link clients, with the
network between them in the attacker's hands: it sees every answer DRCS sends and can slip its
own frames to the node, re-tagged with any request id.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from drc.core.errors import Code, DrcError
from drc.dispatch import Dispatcher
from drc.export import PeerCredentials
from drc.link import LinkClient, LinkPeer, LinkServer, Munge
from drc.link.protocol import (
    fresh_feed_answer,
    pack_frame,
    pack_shared,
    read_frame,
    split_shared,
)
from drc.nodeverbs import NodeVerbs
from drc.server.changes import Answer, ChangeLog

from helpers import run_bounded

# Plays DRCS without being DRCS: a plain user answers the node's first poll with a shared
# answer sealed by its own genuine MUNGE credential, naming exactly what the node asked.
IMPOSTOR_FEED = """
import asyncio, sys
from drc.link.munge import Munge
from drc.link.protocol import SharedAnswer, pack_frame, pack_shared, read_frame

async def main():
    mu = Munge(sys.argv[1])
    generation = sys.argv[2]
    done = asyncio.Event()

    async def serve(reader, writer):
        await read_frame(reader)  # sealed for DRCS's uid: unreadable, so guess id 1
        forged = SharedAnswer("NodeWatch", [generation, 0], [[generation, True, 1, [[5, 0]]]])
        writer.write(pack_frame(pack_shared(1, mu.encode(forged.to_payload()))))
        await writer.drain()
        await reader.read()
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.wait_for(done.wait(), 20)

asyncio.run(main())
"""


class CountingMunge(Munge):
    """DRCS's munged client, counting the credentials it seals."""

    encodes = 0

    def encode(self, payload: bytes, *, uid_restriction: int | None = None) -> bytes:
        self.encodes += 1
        return super().encode(payload, uid_restriction=uid_restriction)


class WatchVerbs(NodeVerbs):
    """DRCS's NodeWatch as ServerNodeVerbs serves it: a poll parked in the change log."""

    def __init__(self, log: ChangeLog) -> None:
        self.log = log

    def node_watch(
        self, peer: PeerCredentials, generation: str, since: int, timeout: int
    ) -> asyncio.Future[Answer]:
        return self.log.poll(generation, since, timeout)


class Feed:
    """A DRCS's change feed on the link, through the one dispatch path every verb takes."""

    def __init__(self, munged: Any) -> None:
        self.log = ChangeLog()
        self.munge = CountingMunge(munged.socket)
        self.dispatcher = Dispatcher(WatchVerbs(self.log), transport="link")
        self.server = LinkServer(self._handle, host="127.0.0.1", port=0, munge=self.munge)

    def _handle(self, peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> Any:
        who = PeerCredentials(uid=peer.uid, gids=frozenset({peer.gid}), pid=0, sender="link")
        return self.dispatcher.dispatch(who, method, args, rid)

    async def parked(self, count: int) -> None:
        """Until ``count`` polls wait in the log (bounded by the test's timeout)."""
        while self.log.followers < count:
            await asyncio.sleep(0.01)


class Interceptor:
    """The network between a node and DRCS: forwards both ways, keeps every response body
    DRCS sent, and slips frames of its own to the node."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.answers: list[bytes] = []
        self.to_node: asyncio.StreamWriter | None = None
        self.server: asyncio.Server | None = None
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.to_node = writer
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def requests() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
            up_writer.close()

        async def responses() -> None:
            while (body := await read_frame(up_reader)) is not None:
                self.answers.append(body)
                writer.write(pack_frame(body))
            writer.close()

        pumps = [asyncio.create_task(requests()), asyncio.create_task(responses())]
        self.pumps.update(pumps)
        await asyncio.gather(*pumps, return_exceptions=True)

    def inject(self, body: bytes) -> None:
        assert self.to_node is not None
        self.to_node.write(pack_frame(body))

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for pump in self.pumps:
            pump.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)


def node_at(port: int, munge: Munge) -> LinkClient:
    """A node daemon's link to DRCS (uid 0), through the attacker's network on ``port``."""
    return LinkClient("127.0.0.1", port, munge=munge, server_uid=0)


def shared_credential(body: bytes) -> bytes:
    """The sealed part of a shared response DRCS sent (the attacker re-tags it at will)."""
    shared = split_shared(body)
    assert shared is not None, body[:20]
    return shared[1]


async def answer_with_change(
    feed: Feed, client: LinkClient, since: int, change: tuple[int, int]
) -> list[Any]:
    """The node polls from ``since``; DRCS records ``change``; the answer the node got."""
    poll = asyncio.create_task(client.call("NodeWatch", [feed.log.generation, since, 60]))
    await feed.parked(1)
    feed.log.record("revoked", *change)
    return await poll


def test_one_change_is_sealed_once_and_every_follower_gets_the_same_bytes(munged) -> None:
    async def body() -> None:
        feed = Feed(munged)
        async with feed.server:
            taps = [Interceptor(feed.server.tcp_address) for _ in range(20)]
            # one munged decodes for all 20 nodes here: 19 of them see a credential again
            nodes = [node_at(await tap.start(), Munge(munged.socket)) for tap in taps]
            try:
                gen = feed.log.generation
                polls = [asyncio.create_task(n.call("NodeWatch", [gen, 0, 60])) for n in nodes]
                await feed.parked(len(nodes))
                sealed_before = feed.munge.encodes
                feed.log.record("revoked", 5, 2)
                answers = await asyncio.gather(*polls)
                assert answers == [[[gen, True, 1, [[5, 2]]]]] * len(nodes)
                assert feed.munge.encodes - sealed_before == 1
                credentials = {shared_credential(tap.answers[-1]) for tap in taps}
                assert len(credentials) == 1
            finally:
                for node, tap in zip(nodes, taps, strict=True):
                    await node.close()
                    await tap.close()

    run_bounded(body(), timeout=60)


def test_an_old_batch_replayed_to_a_node_after_a_newer_one_is_ignored(munged, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="drc.link.client")

    async def body() -> None:
        feed = Feed(munged)
        async with feed.server:
            tap = Interceptor(feed.server.tcp_address)
            node = node_at(await tap.start(), Munge(munged.socket))
            try:
                gen = feed.log.generation
                first = await answer_with_change(feed, node, 0, (5, 2))
                assert first == [[gen, True, 1, [[5, 2]]]]
                old = shared_credential(tap.answers[-1])  # captured: credential 5 at epoch 2
                assert await answer_with_change(feed, node, 1, (5, 3)) == [[gen, True, 2, [[5, 3]]]]

                poll = asyncio.create_task(node.call("NodeWatch", [gen, 2, 60]))
                await feed.parked(1)
                for request_id in range(1, 10):  # the id is outside the seal: try them all
                    tap.inject(pack_shared(request_id, old))
                await asyncio.sleep(0.5)
                assert not poll.done()  # the old batch answered nothing
                feed.log.record("revoked", 6, 1)
                assert await poll == [[gen, True, 3, [[6, 1]]]]  # the genuine answer still
            finally:
                await node.close()
                await tap.close()

    run_bounded(body(), timeout=60)
    assert "dropped a shared answer that is no fresh answer to NodeWatch" in caplog.text


def test_a_shared_answer_of_another_generation_is_not_applied(munged, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="drc.link.client")

    async def body() -> None:
        first, second = Feed(munged), Feed(munged)  # the node fails over to another DRCS
        async with first.server, second.server:
            tap = Interceptor(first.server.tcp_address)
            node = node_at(await tap.start(), Munge(munged.socket))
            old_gen = first.log.generation
            try:
                assert await answer_with_change(first, node, 0, (5, 2)) == [
                    [old_gen, True, 1, [[5, 2]]]
                ]
                captured = shared_credential(tap.answers[-1])  # asked (old_gen, 0)
            finally:
                await node.close()
            tap.target = second.server.tcp_address  # the same path now leads to the other
            assert tap.server is not None
            node = node_at(tap.server.sockets[0].getsockname()[1], node.munge)
            try:
                gen = second.log.generation
                poll = asyncio.create_task(node.call("NodeWatch", [gen, 0, 60]))
                await second.parked(1)
                tap.inject(pack_shared(1, captured))  # the same since, the old generation
                await asyncio.sleep(0.5)
                assert not poll.done()
                second.log.record("freed", 7, 0)
                answer = await poll
                assert answer[0][0] == gen and [c for c, _ in answer[0][3]] == [7]
            finally:
                await node.close()
                await tap.close()

    run_bounded(body(), timeout=60)
    assert "dropped a shared answer" in caplog.text


def test_a_shared_answer_sealed_by_a_non_drcs_uid_is_refused(munged, nobody) -> None:
    async def body() -> None:
        gen = "a" * 16
        impostor = await nobody.spawn(IMPOSTOR_FEED, munged.socket, gen)
        try:
            assert impostor.stdout is not None
            port = int(await asyncio.wait_for(impostor.stdout.readline(), 20))
            node = LinkClient("127.0.0.1", port, munge=Munge(munged.socket), server_uid=0)
            try:
                with pytest.raises(DrcError) as err:
                    await node.call("NodeWatch", [gen, 0, 60])
                assert err.value.code == Code.EPERM
                assert err.value.message == (
                    "DRC link: response from uid 65534, expected DRCS uid 0"
                )
            finally:
                await node.close()
            await asyncio.wait_for(impostor.wait(), 20)
        finally:
            if impostor.returncode is None:
                impostor.terminate()
                try:
                    await asyncio.wait_for(impostor.wait(), 5)
                except TimeoutError:
                    impostor.kill()
                    await impostor.wait()

    run_bounded(body(), timeout=60)


@pytest.mark.parametrize(
    ("asked", "answer", "fresh"),
    [
        (["g", 4], ["g", True, 6, [[5, 2]]], True),  # moves forward
        (["g", 4], ["g", True, 4, []], False),  # a heartbeat is never shared
        (["g", 4], ["g", True, 4, [[5, 2]]], False),  # changes without moving
        (["g", 4], ["g", True, 3, [[5, 2]]], False),  # backwards
        (["g", 4], ["h", False, 0, []], True),  # a new generation: resynchronise
        (["g", 4], ["h", True, 9, [[5, 2]]], False),  # another generation's changes
        (["g", 4], ["g", 1, 6, []], False),  # not a feed answer
    ],
)
def test_a_feed_answer_is_fresh_only_where_it_was_made_for(asked, answer, fresh) -> None:
    assert fresh_feed_answer(asked, [answer]) is fresh
