"""A link request answered through ``then`` (real munged, real TCP).

DRCS's verbs that wait for their group commit answer the link through a callback, with no
future of the link's own per request. What must hold as with a future: the answer or the
error reaches the node, the connection takes its next frames, and a node that goes first
cancels the work: nothing answers into its closed connection.
"""

from __future__ import annotations

import asyncio
from typing import Any

from drc.core.errors import Code, DrcError
from drc.link import LinkPeer, LinkServer, Munge
from drc.link.protocol import Request, Response, pack_frame, read_frame
from drc.link.server import Later

from helpers import run_bounded


class Deferred:
    """A handler answering every request through ``then`` once the test says so."""

    def __init__(self) -> None:
        self.work: list[asyncio.Future[Any]] = []
        self.thens: list[Any] = []

    def __call__(
        self, peer: LinkPeer, method: str, args: list[Any], rid: str | None, then: Any
    ) -> Later:
        future = asyncio.get_running_loop().create_future()
        self.work.append(future)
        self.thens.append(then)
        return Later(future)


def request(client: Munge, request_id: int) -> bytes:
    return pack_frame(client.encode(Request(request_id, "Verb", [request_id]).to_payload()))


def test_answers_through_then_reach_the_node_and_the_next_frames_are_taken(munged) -> None:
    handler = Deferred()
    client = Munge(munged.socket)

    async def body() -> tuple[list[Response], int, int]:
        server = LinkServer(
            handler, host="127.0.0.1", port=0, munge=Munge(munged.socket), answers_later=True
        )
        async with server as srv:
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            writer.write(request(client, 1) + request(client, 2))
            while len(handler.thens) < 2:
                await asyncio.sleep(0.01)
            handler.thens[1](["second"], None)
            handler.thens[0](None, DrcError(Code.EPERM, "not yours"))
            got = []
            for _ in range(2):
                body = await asyncio.wait_for(read_frame(reader), 10)
                assert body is not None
                got.append(Response.from_payload(client.decode(body).payload))
            (connection,) = srv._connections
            writer.close()
            return got, connection.in_flight, len(connection.waiting)

    got, in_flight, waiting = run_bounded(body(), timeout=30)
    assert [(r.id, r.ok, r.error) for r in got] == [
        (2, ["second"], None),
        (1, None, Code.EPERM.dbus_name),
    ]
    assert (in_flight, waiting) == (0, 0)


def test_a_node_that_goes_first_cancels_the_work_and_is_never_answered(munged) -> None:
    handler = Deferred()
    client = Munge(munged.socket)

    async def body() -> bool:
        server = LinkServer(
            handler, host="127.0.0.1", port=0, munge=Munge(munged.socket), answers_later=True
        )
        async with server as srv:
            _reader, writer = await asyncio.open_connection(*srv.tcp_address)
            writer.write(request(client, 1))
            while not handler.work:
                await asyncio.sleep(0.01)
            writer.close()
            for _ in range(200):
                if handler.work[0].cancelled():
                    break
                await asyncio.sleep(0.01)
            return handler.work[0].cancelled()

    assert run_bounded(body(), timeout=30) is True
