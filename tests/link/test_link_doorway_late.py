"""The doorway's authentication deadline when DRCS is behind (issue 22's fail-over): a node
daemon whose first frame waits unread in the kernel when its time is up is given more time,
bounded; a peer that sends nothing is still closed at the deadline. Real link server and
munged on loopback; a busy DRCS is made by blocking its event loop."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from drc.link.protocol import HEADER, Request, pack_frame
from drc.link.server import LinkPeer, LinkServer, _Doorway

from helpers import run_bounded

DEADLINE = 0.5  # auth_timeout of these servers


async def answered(peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> list[Any]:
    return [method]


async def eof_after(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until DRCS closed ``sock`` (None: it answered a frame instead, or kept it)."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(seconds):
            data = await loop.sock_recv(sock, 65536)
    except TimeoutError:
        return None
    return time.monotonic() - t0 if data == b"" else None


async def admitted(server: LinkServer) -> float:
    """The deadline of the one connection waiting at the doorway, once DRCS accepted it."""
    for _ in range(200):
        if server.doorway.waiting:
            return next(iter(server.doorway.waiting.values()))
        await asyncio.sleep(0.01)
    raise AssertionError("DRCS never accepted the connection")


def test_a_frame_waiting_unread_when_drcs_is_behind_is_served_not_closed(loopback: Any) -> None:
    """The frame reaches the kernel after DRCS's loop last looked, while it is busy past the
    deadline: before, the sweep closed the connection; now it waits on and is answered."""
    frame = pack_frame(loopback.munge.encode(Request(1, "ServerInfo", []).to_payload()))

    async def body() -> bytes:
        loop = asyncio.get_running_loop()
        server = loopback.server(answered, "late", auth_timeout=DEADLINE)
        await server.start()
        sock = socket.create_connection(loopback.address("late"))
        try:
            deadline = await admitted(server)
            # DRCS busy from just before the deadline to after it; the node's frame arrives
            # in the kernel in the same busy turn as the sweep, before it runs
            loop.call_at(deadline - 0.2, time.sleep, 0.3)
            loop.call_at(deadline - 0.01, sock.sendall, frame)
            sock.setblocking(False)
            async with asyncio.timeout(5):
                answer = await loop.sock_recv(sock, 65536)
            assert server.doorway.waiting == {}  # it authenticated
            return answer
        finally:
            sock.close()
            await server.close()

    answer = run_bounded(body())
    assert len(answer) > HEADER.size  # a response frame, not the close (b"")


def closed_after_silence(loopback: Any, name: str, wait: float) -> float | None:
    """Seconds until a server closes a connection that never sends a byte (None: open
    after ``wait``)."""

    async def body() -> float | None:
        server = loopback.server(answered, name, auth_timeout=DEADLINE)
        await server.start()
        sock = socket.create_connection(loopback.address(name))
        sock.setblocking(False)
        try:
            await admitted(server)
            return await eof_after(sock, wait)
        finally:
            sock.close()
            await server.close()

    return run_bounded(body())


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(loopback: Any) -> None:
    closed = closed_after_silence(loopback, "silent", 5)
    assert closed is not None and DEADLINE - 0.2 <= closed <= DEADLINE + 1.0, closed


def test_bytes_that_stay_unread_buy_a_bounded_wait(loopback: Any, monkeypatch: Any) -> None:
    """Even if its bytes looked unread at every sweep, a connection is closed after
    SENT_WAIT deadlines: a peer cannot hold a doorway place for long this way."""
    monkeypatch.setattr(_Doorway, "_unread", staticmethod(lambda conn: 1))
    closed = closed_after_silence(loopback, "stuck", 10)
    bound = _Doorway.SENT_WAIT * DEADLINE
    assert closed is not None and bound - 0.7 <= closed <= bound + 1.5, closed
