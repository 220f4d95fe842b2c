"""NodeConnectFeed over the DRC link: a connecting node's hello, follow and first long poll in
one request (drc.link.protocol, continued requests).

A real SQLite store and core, DRCS's node verbs served by the link exporter as drcs serves
them, a real munged, and DRCC's LinkClient: the first poll is parked by DRCS under the
connect's request id, the node's first NodeWatch waits for it without sending a frame, and
a change committed after the position read reaches it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from drc.core.model import FREED
from drc.core.service import CredentialService
from drc.link import LinkClient, LinkServer, Munge
from drc.link.munge import Decoded
from drc.link.protocol import (
    Request,
    Response,
    SharedAnswer,
    pack_frame,
    pack_shared,
    read_frame,
    split_shared,
)
from drc.server.exports import ServerExports
from drc.server.link_exporter import link_server

from helpers import run_bounded

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="node verbs answer root only")

NODE, BOOT, FOLLOWED = "n1", "boot-1", "127.0.0.1:7000"


class CountingMunge(Munge):
    """DRCS's munged client, counting the request frames it decodes and the answers it seals."""

    decodes = 0
    encodes = 0

    def decode(self, cred: bytes, *, allow_replayed: bool = False) -> Decoded:
        self.decodes += 1
        return super().decode(cred, allow_replayed=allow_replayed)

    def encode(self, payload: bytes, *, uid_restriction: int | None = None) -> bytes:
        self.encodes += 1
        return super().encode(payload, uid_restriction=uid_restriction)


class Drcs:
    """DRCS's node verbs on the DRC link, and DRCC's client of it."""

    def __init__(self, service: CredentialService, munge_socket: str) -> None:
        self.exports = ServerExports(service)
        self.changes = self.exports.changes
        self.munge_socket = munge_socket
        self.server: LinkServer = link_server(
            self.exports.nodes,
            "127.0.0.1:0",
            munge_socket=munge_socket,
            node_uids={0},
            frees_may_share=True,  # as drcs serves the cookie pool: hellos share a commit
        )
        self.munge = self.server.munge = CountingMunge(munge_socket)

    def client(self, **kw: Any) -> LinkClient:
        host, port = self.server.tcp_address
        return LinkClient(host, port, munge=Munge(self.munge_socket), server_uid=0, **kw)

    async def parked(self, count: int) -> None:
        while self.changes.followers < count:  # bounded by the test's timeout
            await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(service: CredentialService, munge_socket: str) -> AsyncIterator[Drcs]:
    drcs = Drcs(service, munge_socket)
    await drcs.server.start()
    try:
        yield drcs
    finally:
        await drcs.server.close()


def run(service: CredentialService, munged: Any, body: Callable[[Drcs], Any]) -> None:
    async def test() -> None:
        async with serving(service, munged.socket) as drcs:
            await body(drcs)

    run_bounded(test(), 30)


def test_a_connecting_node_sends_one_frame_and_hears_what_changed_after_the_position(
    service: CredentialService, munged: Any
):
    async def body(drcs: Drcs) -> None:
        drcs.changes.record("revoked", 7, 2)  # before the node came: inside its position
        async with drcs.client() as node:
            [(rebooted, generation, seq)] = await node.call(
                "NodeConnectFeed", [NODE, BOOT, FOLLOWED, 30], rid="n1-connect-1"
            )
            assert (rebooted, generation, seq) == (False, drcs.changes.generation, 1)
            assert [(n, s) for n, s, _ in service.node_servers()] == [(NODE, FOLLOWED)]
            await drcs.parked(1)  # DRCS parked the first poll before the node asked it
            drcs.changes.record("revoked", 9, 3)  # committed after the position was read
            [answer] = await node.call("NodeWatch", [generation, seq, 30])
            assert answer == [generation, True, 2, [[9, 3]]]
            assert drcs.munge.decodes == 1  # the one frame: the first poll was never sent
            # from then on, polls are sent as before
            poll = asyncio.ensure_future(node.call("NodeWatch", [generation, 2, 30]))
            await drcs.parked(1)
            drcs.changes.record("freed", 9, 0)
            [answer] = await poll
            assert answer == [generation, True, 3, [[9, FREED]]]
            assert drcs.munge.decodes == 2

    run(service, munged, body)


def test_nodes_connecting_together_get_their_own_answers_sealed_once(
    service: CredentialService, munged: Any
):
    """The answers DRCS makes together are sealed in one credential (a batch); each node
    takes its own from it, by its request's rid: n3 alone rebooted."""

    async def body(drcs: Drcs) -> None:
        async with drcs.client() as before:
            await before.call("NodeConnectFeed", ["n3", "boot-a", FOLLOWED, 30], rid="n3-a-1")
        encodes = drcs.munge.encodes
        nodes = [drcs.client() for _ in range(8)]
        try:
            answers = await asyncio.gather(
                *(
                    node.call("NodeConnectFeed", [f"n{k}", "boot-b", FOLLOWED, 30], rid=f"n{k}-b-1")
                    for k, node in enumerate(nodes)
                )
            )
            generation = drcs.changes.generation
            assert [a[0] for a in answers] == [[k == 3, generation, 0] for k in range(8)]
            assert drcs.munge.encodes - encodes < len(nodes)  # batches, not one seal each
            await drcs.parked(len(nodes))  # (the first n3 went)
            drcs.changes.record("revoked", 5, 1)
            polls = await asyncio.gather(
                *(node.call("NodeWatch", [generation, 0, 30]) for node in nodes)
            )
            assert all(p == [[generation, True, 1, [[5, 1]]]] for p in polls)
        finally:
            for node in nodes:
                await node.close()

    run(service, munged, body)


def test_a_node_takes_from_a_batch_only_the_answer_of_its_own_request():
    """A batch answers the requests its entries name by rid: a batch replayed to a node that
    is making another request (a new rid) answers nothing, and an entry must have its shape."""
    request = Request(4, "NodeConnectFeed", [NODE, BOOT, FOLLOWED, 30], "n1-x-2")
    batch = ["n1-x-1", False, "g1", 3, "n2-y-1", True, "g1", 3]
    shared = SharedAnswer("NodeConnectFeed", [], [batch])
    assert shared.answer_for(request) is None  # its old request's answer, not this one's
    mine = SharedAnswer("NodeConnectFeed", [], [[*batch, "n1-x-2", True, "g1", 4]])
    assert mine.answer_for(request) == [[True, "g1", 4]]
    for bad in (["n1-x-2", 1, "g1", 4], ["n1-x-2", True, 7, 4], ["n1-x-2", True, "g1"]):
        assert SharedAnswer("NodeConnectFeed", [], [bad]).answer_for(request) is None
    asked = SharedAnswer("NodeConnectFeed", ["g1"], [["n1-x-2", True, "g1", 4]])
    assert asked.answer_for(request) is None
    assert SharedAnswer("NodeWatch", [], [["n1-x-2", True, "g1", 4]]).answer_for(request) is None
    assert (
        SharedAnswer("NodeConnectFeed", [], [batch]).answer_for(
            Request(5, "NodeConnectFeed", [NODE, BOOT, FOLLOWED, 30])  # no rid: in no batch
        )
        is None
    )


def test_the_parked_first_poll_is_the_heartbeat_as_a_poll_sent_would_be(
    service: CredentialService, munged: Any
):
    """Nothing changed: the parked poll is answered empty within its timeout, so the node
    hears that its DRCS is alive as it did from a first NodeWatch it sent."""

    async def body(drcs: Drcs) -> None:
        async with drcs.client(timeout=5) as node:
            [(_rebooted, generation, seq)] = await node.call(
                "NodeConnectFeed", [NODE, BOOT, FOLLOWED, 1], rid="n1-connect-1"
            )
            started = time.monotonic()
            [answer] = await node.call("NodeWatch", [generation, seq, 1])
            assert answer == [generation, True, seq, []]
            assert time.monotonic() - started < 3  # 1 s, ended on DRCS's whole-second tick
            assert drcs.munge.decodes == 1

    run(service, munged, body)


def test_a_retried_connect_answers_from_the_record_and_parks_nothing(
    service: CredentialService, munged: Any
):
    """A retry of a committed NodeConnectFeed (the same rid, another connection) runs nothing
    again: it answers no position and parks no poll, and the node's first poll is sent and
    answered at once with the feed's generation (it resyncs)."""

    async def body(drcs: Drcs) -> None:
        args = [NODE, BOOT, FOLLOWED, 30]
        async with drcs.client() as first:
            await first.call("NodeConnectFeed", args, rid="n1-connect-1")
        async with drcs.client() as retry:
            [(rebooted, generation, seq)] = await retry.call(
                "NodeConnectFeed", args, rid="n1-connect-1"
            )
            assert (rebooted, generation, seq) == (False, "", 0)
            decodes = drcs.munge.decodes
            [answer] = await retry.call("NodeWatch", [generation, seq, 30])
            assert answer == [drcs.changes.generation, False, 0, []]
            assert drcs.munge.decodes == decodes + 1  # sent: nothing was parked for it

    run(service, munged, body)


@asynccontextmanager
async def node_of(
    fake_drcs: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any], munge: Munge
) -> AsyncIterator[LinkClient]:
    """DRCC's LinkClient connected to ``fake_drcs``, a DRCS written by the test on loopback."""
    server = await asyncio.start_server(fake_drcs, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with LinkClient("127.0.0.1", port, munge=munge, server_uid=0) as node:
            yield node
    finally:
        server.close()


def test_a_second_answer_read_right_behind_the_first_reaches_the_first_poll(munged: Any):
    """DRCS writes the connect's answer, then the parked poll's; both may arrive in one read
    (a change right after the connect). The client notes the parked question as it takes the
    first answer, so the second finds its call, which sends nothing."""
    munge = Munge(munged.socket)
    frames: list[Request] = []

    async def fake_drcs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_frame(reader)
        assert body is not None and split_shared(body) is None
        request = Request.from_payload(munge.decode(body).payload)
        frames.append(request)
        first = Response(request.id, ok=[[False, "g1", 5]]).to_payload()
        change = SharedAnswer("NodeWatch", ["g1", 5], [["g1", True, 6, [[3, 1]]]]).to_payload()
        writer.write(
            pack_frame(munge.encode(first))
            + pack_frame(pack_shared(request.id, munge.encode(change)))
        )
        while (more := await read_frame(reader)) is not None:  # the node sends nothing more
            frames.append(Request.from_payload(munge.decode(more).payload))
        writer.close()

    async def test() -> None:
        async with node_of(fake_drcs, munge) as node:
            [(_rebooted, generation, seq)] = await node.call(
                "NodeConnectFeed", [NODE, BOOT, FOLLOWED, 30], rid="n1-connect-1"
            )
            [answer] = await node.call("NodeWatch", [generation, seq, 30])
            assert answer == ["g1", True, 6, [[3, 1]]]
            # another question is no parked one: it is sent
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(node.call("NodeWatch", ["g1", 6, 30]), 0.5)
        assert [r.method for r in frames] == ["NodeConnectFeed", "NodeWatch"]

    run_bounded(test(), 30)


def test_an_answer_under_the_parked_polls_id_that_is_no_poll_answer_drops_the_link(
    munged: Any,
):
    """The parked poll's answer comes under the connect's id: one shaped as another verb's
    (a connect answer sent twice) is refused and the link dropped, never handed to the node's
    poll, which is then sent afresh on a new connection."""
    munge = Munge(munged.socket)
    connections: list[str] = []

    async def fake_drcs(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        body = await read_frame(reader)
        assert body is not None
        request = Request.from_payload(munge.decode(body).payload)
        connections.append(request.method)
        if request.method == "NodeConnectFeed":
            first = Response(request.id, ok=[[False, "g1", 5]]).to_payload()
            writer.write(pack_frame(munge.encode(first)) + pack_frame(munge.encode(first)))
        else:
            heartbeat = Response(request.id, ok=[["g1", True, 5, []]]).to_payload()
            writer.write(pack_frame(munge.encode(heartbeat)))
        await reader.read()
        writer.close()

    async def test() -> None:
        async with node_of(fake_drcs, munge) as node:
            await node.call("NodeConnectFeed", [NODE, BOOT, FOLLOWED, 30], rid="n1-c-1")
            assert await node.call("NodeWatch", ["g1", 5, 30]) == [["g1", True, 5, []]]
        assert connections == ["NodeConnectFeed", "NodeWatch"]  # the first link was dropped

    run_bounded(test(), 30)


def test_a_follower_that_never_reads_gets_no_more_than_it_asked(
    service: CredentialService, munged: Any
):
    """The attack: a node daemon's connection connects and never reads, while the feed moves
    on and heartbeats pass. DRCS writes it one answer per request it read (the connect's and
    its parked poll's), nothing more: nothing builds up for it, and other nodes are served."""
    munge = Munge(munged.socket)

    async def body(drcs: Drcs) -> None:
        host, port = drcs.server.tcp_address
        reader, writer = await asyncio.open_connection(host, port)
        request = Request(1, "NodeConnectFeed", [NODE, BOOT, FOLLOWED, 1], "n1-connect-1")
        writer.write(pack_frame(munge.encode(request.to_payload(), uid_restriction=0)))
        await drcs.parked(1)
        for credential in range(100, 150):  # the feed moves on; the follower reads nothing
            drcs.changes.record("revoked", credential, 1)
            await asyncio.sleep(0.01)
        await asyncio.sleep(2.5)  # and heartbeats pass
        assert drcs.changes.followers == 0  # its one poll was answered, none parked again
        async with drcs.client() as other:  # DRCS serves another node meanwhile
            [(_r, generation, seq)] = await other.call(
                "NodeConnectFeed", ["n2", "boot-2", FOLLOWED, 30], rid="n2-connect-1"
            )
            assert generation == drcs.changes.generation and seq == 50
        answers = 0
        while True:
            try:
                body = await asyncio.wait_for(read_frame(reader), 0.5)
            except TimeoutError:
                break
            if body is None:
                break
            answers += 1
        assert answers == 2  # the connect's answer and its first poll's: nothing unasked
        writer.close()

    run(service, munged, body)
