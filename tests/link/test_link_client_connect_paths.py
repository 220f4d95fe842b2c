"""How a link client connects, and whose deadline ends a call.

A numeric DRCS address is connected without asyncio's general path (no resolution, and a
connect the kernel finished at once waits for no writability); a name still goes through it.
Either way the node connects from its ``source``, TCP_NODELAY is set and a refused connect
says so and leaves no descriptor behind. A fail-over's deadline (``within``) rides on the
client's own timer: when it ends first the caller gets TimeoutError and the connection stays
open; the client's own timeout still fails the connection with the link's reason.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import Any

import pytest

from drc.core.errors import Code, DrcError
from drc.embedded.polling import free_port
from drc.link import LinkPeer

from helpers import run_bounded


class Where:
    """A handler answering with the address the request came from; ``Slow`` waits first."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def __call__(
        self, peer: LinkPeer, method: str, args: list[Any], rid: str | None
    ) -> list[Any]:
        if method == "Slow":
            await asyncio.sleep(self.delay)
        return [peer.address]


def _recording_sockets(monkeypatch: pytest.MonkeyPatch) -> list[socket.socket]:
    """The sockets made from now on (the client's own), to check that each was closed."""
    made: list[socket.socket] = []

    class Recorded(socket.socket):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if self.family != socket.AF_UNIX:  # not an event loop's self-pipe
                made.append(self)

    monkeypatch.setattr(socket, "socket", Recorded)
    return made


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_numeric_and_named_hosts_connect_from_the_source(loopback: Any, host: str) -> None:
    _, port = loopback.address("a")

    async def body() -> tuple[list[Any], int]:
        async with loopback.server(Where(), "a"):
            client = loopback.client("a", source="127.9.0.7", timeout=5)
            client.host = host  # the same server, by number or by name
            try:
                answer = await client.call("Where")
                assert client._conn is not None
                sock = client._conn.transport.get_extra_info("socket")
                nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                assert sock.getsockname()[0] == "127.9.0.7"
                assert sock.getpeername()[1] == port
                return answer, nodelay
            finally:
                await client.close()

    answer, nodelay = run_bounded(body(), timeout=30)
    assert str(answer[0]).startswith("127.9.0.7")
    assert nodelay


def _failed_call(loopback: Any, port: int, timeout: float) -> DrcError:
    """What a call of a client with this ``timeout`` to ``port`` on loopback failed with."""

    async def body() -> DrcError:
        client = loopback.client("a", timeout=timeout)
        client.port = port
        with pytest.raises(DrcError) as failed:
            await client.call("Where")
        await client.close()
        return failed.value

    return run_bounded(body(), timeout=30)


def test_a_refused_numeric_connect_is_link_down_and_closes_its_socket(
    loopback: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()  # nobody listens there
    made = _recording_sockets(monkeypatch)
    error = _failed_call(loopback, port, timeout=5)
    assert error.code is Code.ECONNREFUSED
    assert "connection refused" in error.message
    assert made and all(sock.fileno() == -1 for sock in made)  # closed


def test_a_callers_deadline_is_a_timeout_error_and_keeps_the_connection(loopback: Any) -> None:
    async def body() -> None:
        async with loopback.server(Where(delay=0.5), "a"):
            client = loopback.client("a", timeout=5)
            try:
                await client.call("Where")  # connected
                conn = client._conn
                with pytest.raises(TimeoutError):
                    await client.call("Slow", within=0.1)
                assert client._conn is conn and client.connected  # the caller judges it
                assert (await client.call("Where"))[0].startswith("127.0.0.1")
                # the link's own timeout, shorter than the caller's: the link's reason
                client.timeout = 0.1
                with pytest.raises(DrcError) as own:
                    await client.call("Slow", within=5)
                assert own.value.code is Code.ECONNREFUSED
                assert "no answer within 0.1 s" in own.value.message
                assert not client.connected
            finally:
                await client.close()

    run_bounded(body(), timeout=30)


def test_a_connect_the_kernel_has_not_finished_is_waited_for_within_the_timeout(
    loopback: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener whose accept queue is full drops the SYN: the connect stays in progress,
    the client waits for it, gives up at its timeout and closes its socket."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", free_port()))
    listener.listen(0)
    port = listener.getsockname()[1]
    queued = []
    for _ in range(4):  # fill the accept queue (never accepted)
        filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        queued.append(filler)

    made = _recording_sockets(monkeypatch)
    try:
        error = _failed_call(loopback, port, timeout=0.5)
    finally:
        for filler in queued:
            filler.close()
        listener.close()
    assert error.code is Code.ECONNREFUSED
    assert "no answer within 0.5 s" in error.message
    assert made and all(sock.fileno() == -1 for sock in made)  # closed


def test_a_handshake_that_ends_while_the_client_looks_is_connected(
    loopback: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel may end the handshake between the client's last look (still in progress)
    and its wait, as on a loaded machine: the client is connected. It must not call connect()
    again to learn the outcome: that says EISCONN once the handshake is over."""

    class EndsUnseen(socket.socket):
        def connect_ex(self, address: Any) -> int:
            error = super().connect_ex(address)
            return errno.EALREADY if error in (0, errno.EISCONN) else error

        def connect(self, address: Any) -> None:
            raise OSError(errno.EISCONN, os.strerror(errno.EISCONN))

    async def body() -> list[Any]:
        async with loopback.server(Where(), "a"):
            client = loopback.client("a", timeout=5)
            try:
                return await client.call("Where")
            finally:
                await client.close()

    monkeypatch.setattr(socket, "socket", EndsUnseen)
    answer = run_bounded(body(), timeout=30)
    assert str(answer[0]).startswith("127.0.0.1")
