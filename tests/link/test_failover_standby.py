"""The standby link of DRCC's fail-over (drc.link.failover): a node keeps an authenticated,
idle connection to the DRCS it would move to, so when the DRCS it follows dies its first
request there needs no connect and no doorway; when the standby DRCS dies, the node keeps
following its own and opens the standby again later. Over real link servers on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from drc import config
from drc.link import LinkClient
from drc.link.failover import STANDBY_CALL, FailoverLink, ServerChoice
from drc.link.server import LinkPeer
from drc.node.main import _links

from helpers import run_bounded


class Served:
    """A handler recording (method, the connection's address) of each request."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, str]] = []

    async def __call__(
        self, peer: LinkPeer, method: str, args: list[Any], rid: str | None
    ) -> list[Any]:
        self.seen.append((method, peer.address))
        return [self.name]


def failover(loopback: Any, names: list[str], timeout: float = 3.0) -> FailoverLink:
    def make(server: str) -> LinkClient:
        return loopback.client(server, timeout=timeout / 2)

    return FailoverLink(ServerChoice(names), make, timeout=timeout, rid_prefix="node1-x")


async def until(condition: Any, seconds: float = 5.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.01)


def test_primary_dies_and_the_node_moves_over_its_standby_link_with_no_new_connection(
    loopback: Any,
) -> None:
    a, b = Served("a"), Served("b")

    async def body() -> None:
        link = failover(loopback, ["a", "b"])
        server_a = loopback.server(a, "a")
        await server_a.start()
        async with loopback.server(b, "b") as server_b:
            assert await link.call("NodeWatch", ["", 0, 1]) == ["a"]
            assert await link.open_standby()
            assert server_b.connections == 1 and not server_b.doorway.waiting  # past it
            await server_a.close()
            assert await link.call("NodeMoved", ["n1", "b", []]) == ["b"]
            assert link.choice.current == "b"
            assert server_b.connections == 1  # the standby link carried the move
            await link.close()

    run_bounded(body())
    assert [m for m, _ in b.seen] == [STANDBY_CALL, "NodeMoved"]
    assert b.seen[0][1] == b.seen[1][1]  # one connection: the same address and port


def test_an_idle_standby_link_outlives_the_doorway_deadline(loopback: Any) -> None:
    """Authenticated, it is no longer the doorway's: idle far past ``auth_timeout``, it is
    still open and carries the next request."""
    a, b = Served("a"), Served("b")

    async def body() -> None:
        link = failover(loopback, ["a", "b"])
        async with loopback.server(a, "a"), loopback.server(b, "b", auth_timeout=0.2) as sb:
            assert await link.call("NodeWatch", ["", 0, 1]) == ["a"]
            assert await link.open_standby()
            await asyncio.sleep(1.0)  # five doorway deadlines
            assert sb.connections == 1 and link.clients[1].connected
            assert await link.clients[1].call("NodeWatch", ["", 0, 1]) == ["b"]
            await link.close()

    run_bounded(body())
    assert b.seen[0][1] == b.seen[1][1]


def test_the_standby_drcs_dies_the_node_stays_and_reopens_the_standby_when_it_is_back(
    loopback: Any,
) -> None:
    a, b = Served("a"), Served("b")

    async def body() -> None:
        link = failover(loopback, ["a", "b"])
        async with loopback.server(a, "a"):
            assert await link.call("NodeWatch", ["", 0, 1]) == ["a"]
            server_b = loopback.server(b, "b")
            await server_b.start()
            keeper = asyncio.ensure_future(link.keep_standby(delay=0.1))
            try:
                await until(lambda: server_b.connections == 1)
                await server_b.close()  # the standby DRCS dies
                await until(lambda: not link.clients[1].connected)
                assert await link.call("NodeWatch", ["", 0, 1]) == ["a"]  # it stays
                assert link.choice.current == "a"
                await server_b.start()  # back: the standby opens again, unasked
                await until(lambda: server_b.connections == 1)
                await server_b.close()
            finally:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            await link.close()

    run_bounded(body())
    assert [m for m, _ in b.seen] == [STANDBY_CALL, STANDBY_CALL]
    assert a.seen.count(("NodeWatch", a.seen[0][1])) == 2  # one connection to a throughout


def test_after_a_move_the_standby_is_the_next_server_and_opens_again(loopback: Any) -> None:
    """Three DRCS: following a with b on standby, a dies; the node follows b over the
    standby link and its keeper opens the next standby, c."""
    a, b, c = Served("a"), Served("b"), Served("c")

    async def body() -> None:
        link = failover(loopback, ["a", "b", "c"])
        server_a = loopback.server(a, "a")
        await server_a.start()
        async with loopback.server(b, "b") as sb, loopback.server(c, "c") as sc:
            keeper = asyncio.ensure_future(link.keep_standby(delay=0.1))
            try:
                assert await link.call("NodeWatch", ["", 0, 1]) == ["a"]
                await until(lambda: sb.connections == 1)
                assert sc.connections == 0
                await server_a.close()
                assert await link.call("NodeMoved", ["n1", "b", []]) == ["b"]
                assert sb.connections == 1
                await until(lambda: sc.connections == 1)
            finally:
                keeper.cancel()
                await asyncio.gather(keeper, return_exceptions=True)
            await link.close()

    run_bounded(body())
    assert [m for m, _ in c.seen] == [STANDBY_CALL]


def test_one_server_has_no_standby(loopback: Any) -> None:
    async def body() -> None:
        link = failover(loopback, ["a"])
        assert link.standby_index is None
        assert not await link.open_standby()
        await asyncio.wait_for(link.keep_standby(delay=0.01), 1)  # returns at once
        await link.close()

    run_bounded(body())


def test_the_standby_setting_is_checked_at_start(tmp_path: Path) -> None:
    """``[link] standby``: seconds within which DRCC opens its standby link; 0 turns it off;
    a value out of range stops drcc at start with the setting named."""
    path = tmp_path / "drc.conf"
    servers = 'servers = ["svc1:6820", "svc2:6820"]\n'
    path.write_text(f"[link]\n{servers}")
    assert config.load(path)["link"]["standby"] == 30
    calls, feed = _links(config.load(path), "n1")
    assert feed.standby_index == 1 and calls.choice is feed.choice
    path.write_text(f"[link]\n{servers}standby = 0\n")
    _links(config.load(path), "n1")
    path.write_text(f"[link]\n{servers}standby = 3601\n")
    with pytest.raises(config.ConfigError, match=r"\[link\] standby must be 0 to 3600 seconds"):
        _links(config.load(path), "n1")
