"""DRCC's fail-over link (drc.link.failover) and the request id of the link protocol, over
real link servers on loopback (whole clusters fail over in tests/ha)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from drc import config
from drc.core.errors import Code, DrcError
from drc.link import LinkClient
from drc.link.failover import FailoverLink, ServerChoice
from drc.link.protocol import BadRequest, Request
from drc.link.server import LinkPeer
from drc.node.main import link_servers

from helpers import run_bounded


class Served:
    """A handler recording (method, rid) of each request; EPERM for "Refuse"."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(
        self, peer: LinkPeer, method: str, args: list[Any], rid: str | None
    ) -> list[Any]:
        self.seen.append((method, rid))
        if method == "Refuse":
            raise DrcError(Code.EPERM, "no")
        return [self.name]


def failover(loopback: Any, names: list[str], timeout: float = 3.0) -> FailoverLink:
    def make(server: str) -> LinkClient:
        return loopback.client(server, timeout=timeout / 2)

    return FailoverLink(ServerChoice(names), make, timeout=timeout, rid_prefix="node1-x")


def test_a_dead_first_server_is_skipped_and_the_rid_is_kept(loopback: Any) -> None:
    second = Served("b")

    async def body() -> None:
        async with loopback.server(second, "b"):
            link = failover(loopback, ["a", "b"])  # nothing listens on "a"
            assert await link.call("NodeAcquire", [{}, 0]) == ["b"]
            assert link.choice.current == "b"
            assert await link.call("NodeWatch", ["", 0, 1]) == ["b"]
            with pytest.raises(DrcError) as e:  # an answered error is final, not failed over
                await link.call("Refuse", [])
            assert e.value.code is Code.EPERM and link.choice.current == "b"
            await link.close()

    run_bounded(body())
    assert second.seen[0] == ("NodeAcquire", "node1-x-1")  # mutating: carries a rid
    assert second.seen[1] == ("NodeWatch", None)  # reads do not


def test_the_node_moves_on_when_its_server_dies_and_comes_back_later(loopback: Any) -> None:
    a, b = Served("a"), Served("b")

    async def body() -> None:
        link = failover(loopback, ["a", "b"])
        server_a = loopback.server(a, "a")
        await server_a.start()
        async with loopback.server(b, "b"):
            assert await link.call("NodeRelease", [{}, 1]) == ["a"]
            await server_a.close()
            assert await link.call("NodeRelease", [{}, 2]) == ["b"]
        await server_a.start()  # b is gone, a is back: no restart of the node needed
        try:
            assert await link.call("NodeRelease", [{}, 3]) == ["a"]
        finally:
            await server_a.close()
            await link.close()

    run_bounded(body())


def test_the_feed_link_does_not_retry_a_poll_on_the_server_moved_to(loopback: Any) -> None:
    """``follow_moves=False`` (DRCC's change feed): the poll whose server died fails with the
    reason, the node now follows the next server, and the next call goes there; the calls'
    link (sharing the choice) is not affected."""
    a, b = Served("a"), Served("b")

    async def body() -> None:
        calls = failover(loopback, ["a", "b"])
        feed = FailoverLink(
            calls.choice,
            lambda server: loopback.client(server, timeout=1.5),
            timeout=3.0,
            follow_moves=False,
        )
        server_a = loopback.server(a, "a")
        await server_a.start()
        async with loopback.server(b, "b"):
            assert await feed.call("NodeWatch", ["g", 0, 1]) == ["a"]
            await server_a.close()
            with pytest.raises(DrcError) as e:
                await feed.call("NodeWatch", ["g", 0, 1])
            assert e.value.code is Code.ECONNREFUSED and calls.choice.current == "b"
            assert await feed.call("NodeMoved", ["n1", "b", []]) == ["b"]
            assert await calls.call("NodeRelease", [{}, 1]) == ["b"]
        await feed.close()
        await calls.close()

    run_bounded(body())
    assert [m for m, _ in a.seen] == ["NodeWatch"]  # the failed poll was not asked of b
    assert [m for m, _ in b.seen] == ["NodeMoved", "NodeRelease"]


def test_a_server_that_answered_econnrefused_keeps_its_connection_when_the_node_moves(
    loopback: Any,
) -> None:
    """DRCS a answers ECONNREFUSED (its store did not answer in time): the node moves to b,
    but its connection to a (sound, authenticated) stays open for when it comes back."""

    class Busy(Served):
        async def __call__(self, peer, method, args, rid):  # type: ignore[no-untyped-def]
            if method == "Busy":
                self.seen.append((method, rid))
                raise DrcError(Code.ECONNREFUSED, "the database has not answered for 2 s")
            return await super().__call__(peer, method, args, rid)

    a, b = Busy("a"), Served("b")

    async def body() -> None:
        link = failover(loopback, ["a", "b"])
        async with loopback.server(a, "a"), loopback.server(b, "b"):
            assert await link.call("NodeRelease", [{}, 1]) == ["a"]
            kept = link.clients[0]._conn
            assert await link.call("Busy", []) == ["b"]
            assert link.choice.current == "b" and link.choice.left_alive
            await asyncio.sleep(0.1)  # a close would have run by now
            assert link.clients[0]._conn is kept and kept is not None and kept.alive
            await link.close()

    run_bounded(body())
    assert [m for m, _ in a.seen] == ["NodeRelease", "Busy"]


def test_no_server_at_all_fails_econnrefused_after_the_timeout_not_before(loopback: Any) -> None:
    async def body() -> float:
        link = failover(loopback, ["a", "b"], timeout=1.0)
        t0 = time.monotonic()
        with pytest.raises(DrcError) as e:
            await link.call("NodeAcquire", [{}, 0])
        assert e.value.code is Code.ECONNREFUSED
        assert e.value.message == (  # how each server failed, and where to look
            "drcc could not reach DRCS: no DRCS answered within 1 s (a: connection refused; "
            "b: connection refused); check drcs.service on a, b and the network from this node"
        )
        await link.close()
        return time.monotonic() - t0

    waited = run_bounded(body())
    assert 0.8 <= waited <= 2.0  # waited for a server to come back, bounded by the timeout


def test_a_server_coming_up_during_the_wait_answers_the_waiting_call(loopback: Any) -> None:
    a = Served("a")

    async def body() -> None:
        link = failover(loopback, ["a"], timeout=3.0)
        server = loopback.server(a, "a")
        call = asyncio.create_task(link.call("NodeGrant", [{}, 1, 2, 3]))
        await asyncio.sleep(0.5)
        await server.start()
        try:
            assert await call == ["a"]
        finally:
            await server.close()
            await link.close()

    run_bounded(body())


def test_request_ids_must_be_short_printable_tokens() -> None:
    ok = Request.from_payload(b'{"id":1,"method":"M","args":[],"rid":"n1-ab-7"}')
    assert ok.rid == "n1-ab-7"
    assert Request.from_payload(ok.to_payload()) == ok
    for rid in ('""', '"a b"', '"' + "x" * 65 + '"', "7", '"\\u00e9"'):
        with pytest.raises(BadRequest) as e:
            Request.from_payload(b'{"id":1,"method":"M","args":[],"rid":' + rid.encode() + b"}")
        assert e.value.request_id == 1  # answered with EINVAL, the connection stays
    with pytest.raises(BadRequest):
        Request.from_payload(b'{"id":1,"method":"M","args":[],"rid":"a","extra":1}')


def test_link_servers_keeps_server_as_the_one_item_case(tmp_path: Path) -> None:
    path = tmp_path / "drc.conf"
    path.write_text('[link]\nserver = "svc1:6820"\n')
    assert link_servers(config.load(path)) == ["svc1:6820"]
    path.write_text('[link]\nserver = "svc1:6820"\nservers = ["svc2:6820", "svc3:6820"]\n')
    assert link_servers(config.load(path)) == ["svc2:6820", "svc3:6820"]
    path.write_text('[link]\nservers = ["svc2"]\n')
    with pytest.raises(config.ConfigError) as e:
        link_servers(config.load(path))
    assert str(e.value) == f"{path}: [link] servers must be host:port, got 'svc2'"
    path.write_text("[link]\n")
    with pytest.raises(config.ConfigError, match=r"servers \(host:port of every DRCS\) is not"):
        link_servers(config.load(path))
