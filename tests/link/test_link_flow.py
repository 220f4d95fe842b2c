"""The link server's flow: requests answered by futures, parked polls, limits and stalls.

Over TCP on loopback with a real munged, with the real LinkClient."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from drc.core.errors import Code, DrcError
from drc.link import LinkPeer
from drc.link.protocol import HEADER

from helpers import run_bounded


class Parking:
    """A handler that answers every request with a future it keeps (as NodeWatch does)."""

    def __init__(self) -> None:
        self.parked: list[tuple[str, asyncio.Future[list[Any]]]] = []
        self.arrived = asyncio.Event()

    def __call__(
        self, peer: LinkPeer, method: str, args: list[Any], rid: str | None
    ) -> asyncio.Future[list[Any]]:
        future = asyncio.get_running_loop().create_future()
        self.parked.append((method, future))
        self.arrived.set()
        return future

    async def wait_for(self, count: int) -> None:
        while len(self.parked) < count:
            self.arrived.clear()
            await self.arrived.wait()


def test_a_future_is_answered_when_set_and_needs_no_task(loopback: Any) -> None:
    handler = Parking()

    async def body() -> None:
        async with (
            loopback.server(handler) as server,
            loopback.client() as client,
        ):
            call = asyncio.create_task(client.call("NodeWatch", ["g", 0, 60]))
            await handler.wait_for(1)
            assert not server._tasks, "a parked future must not cost a task"
            await asyncio.sleep(0.05)
            assert not call.done()
            handler.parked[0][1].set_result(["g", True, 3, [[7, 2]]])
            assert await call == ["g", True, 3, [[7, 2]]]
            failing = asyncio.create_task(client.call("NodeWatch", ["g", 3, 60]))
            await handler.wait_for(2)
            handler.parked[1][1].set_exception(DrcError(Code.EPERM, "not a node"))
            with pytest.raises(DrcError) as err:
                await failing
            assert err.value.code is Code.EPERM and err.value.message == "not a node"

    run_bounded(body())


def test_a_closed_connection_cancels_its_parked_futures(loopback: Any) -> None:
    handler = Parking()

    async def body() -> None:
        async with loopback.server(handler) as server:
            client = loopback.client()
            call = asyncio.create_task(client.call("NodeWatch", ["g", 0, 60]))
            await handler.wait_for(1)
            assert server.connections == 1
            await client.close()
            future = handler.parked[0][1]
            for _ in range(100):
                if future.cancelled():
                    break
                await asyncio.sleep(0.02)
            assert future.cancelled(), "the node went: its parked poll must go too"
            assert server.connections == 0
            with pytest.raises(DrcError):
                await call

    run_bounded(body())


def test_at_most_max_in_flight_requests_run_per_connection(loopback: Any) -> None:
    handler = Parking()

    async def body() -> None:
        async with (
            loopback.server(handler, max_in_flight=2),
            loopback.client() as client,
        ):
            calls = [asyncio.create_task(client.call("M", [i])) for i in range(4)]
            await handler.wait_for(2)
            await asyncio.sleep(0.2)
            assert len(handler.parked) == 2, "the third request must wait for a slot"
            handler.parked[0][1].set_result(["first"])
            await handler.wait_for(3)
            assert len(handler.parked) == 3
            for _method, future in handler.parked[1:]:
                future.set_result(["more"])
            await handler.wait_for(4)
            handler.parked[3][1].set_result(["last"])
            assert await asyncio.gather(*calls) == [["first"], ["more"], ["more"], ["last"]]

    run_bounded(body())


def test_a_frame_left_unfinished_closes_the_connection_after_body_timeout(loopback: Any) -> None:
    async def handler(peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> list[Any]:
        return [method]

    async def body() -> float:
        async with loopback.server(handler, body_timeout=0.3) as server:
            reader, writer = await asyncio.open_connection(*loopback.address())
            writer.write(HEADER.pack(100) + b'{"id": 1')  # 8 of 100 bytes, then silence
            await writer.drain()
            started = asyncio.get_running_loop().time()
            assert await asyncio.wait_for(reader.read(), 10) == b""
            waited = asyncio.get_running_loop().time() - started
            writer.close()
            assert server.connections == 0
            # an idle connection (no frame begun) is never timed out
            idle = socket.create_connection(loopback.address())
            await asyncio.sleep(0.6)
            assert server.connections == 1
            idle.close()
            return waited

    assert 0.25 <= run_bounded(body()) < 5


def test_a_coroutine_handler_sees_its_request_id_and_a_crash_is_einval(loopback: Any) -> None:
    seen: list[str | None] = []

    async def handler(peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> list[Any]:
        await asyncio.sleep(0)
        seen.append(rid)
        if method == "Crash":
            raise RuntimeError("bug")
        return []

    async def body() -> None:
        async with (
            loopback.server(handler),
            loopback.client() as client,
        ):
            await client.call("NodeRelease", [], rid="boot-1-7")
            await client.call("NodeWatch", [])
            with pytest.raises(DrcError) as err:
                await client.call("Crash", [])
            assert err.value.code is Code.CRED_EXTERNAL_FAILURE  # as on the bus; never EINVAL
            assert "internal error in Crash" in err.value.message

    run_bounded(body())
    assert seen == ["boot-1-7", None, None]
