"""The link's fast lane (LinkClient.send, FailoverLink.send): a cache miss sent in the loop turn
that asked it and answered in the turn that reads its answer, with call()'s outcomes: an
answer, DRCS's refusal, a silent DRCS, a DRCS older than keyed answers, a dead DRCS failed
over. Real link servers and munged on 127.0.0.1."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_failover import Served, failover

from drc.core.errors import Code, DrcError
from drc.link import protocol
from drc.link.client import Unsent
from drc.link.server import LinkPeer

from helpers import run_bounded


class Heard:
    """An ``answered`` callback: what it heard, and a future set when it did."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[Any, BaseException | None]] = []
        self.future = asyncio.get_running_loop().create_future()

    def __call__(self, ok: list[Any] | None, error: BaseException | None) -> None:
        self.outcomes.append((ok, error))
        if not self.future.done():
            self.future.set_result(None)

    async def one(self, timeout: float = 10) -> tuple[Any, BaseException | None]:
        await asyncio.wait_for(asyncio.shield(self.future), timeout)
        await asyncio.sleep(0.05)  # a second answer would come by now
        assert len(self.outcomes) == 1, self.outcomes
        return self.outcomes[0]


class Silent:
    """A handler that answers "Ping" and never answers anything else."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(
        self, peer: LinkPeer, method: str, args: list[Any], rid: str | None
    ) -> list[Any]:
        self.calls.append(method)
        if method != "Ping":
            await asyncio.sleep(3600)
        return [method]


def test_send_needs_an_open_keyed_connection_and_a_plain_request(loopback: Any) -> None:
    """Nothing is sent before the link is open, nor for what only call() asks well (a shared
    or continued answer): False, and call() does it."""

    async def body() -> None:
        async with loopback.server(Served("a")) as _server:
            client = loopback.client(timeout=5)
            heard = Heard()
            far = asyncio.get_running_loop().time() + 60
            assert not client.send("NodeAccess", [{}, 1], heard, until=far)  # not connected
            assert await client.call("Ping") == ["a"]
            for method in (*protocol.SHAREABLE, *protocol.CONTINUED):
                assert not client.send(method, [], heard, until=far)
            assert client.send("NodeAccess", [{}, 1], heard, until=far)
            assert await heard.one() == (["a"], None)
            await client.close()
            assert not client.send("NodeAccess", [{}, 1], heard, until=far)  # closed

    run_bounded(body(), timeout=60)


def test_an_answer_reaches_send_in_the_loop_turn_that_reads_it(loopback: Any, monkeypatch) -> None:
    """The answer is heard inside the connection's data_received: no task and no loop turn
    between the frame read and the caller."""
    from drc.link import client as client_module

    inside: list[bool] = []
    reading = False
    received = client_module._Connection.data_received

    def data_received(self: Any, data: bytes) -> None:
        nonlocal reading
        reading = True
        try:
            received(self, data)
        finally:
            reading = False

    monkeypatch.setattr(client_module._Connection, "data_received", data_received)

    async def body() -> None:
        async with loopback.server(Served("a")):
            client = loopback.client(timeout=5)
            await client.call("Ping")
            heard = Heard()

            def answered(ok: Any, error: BaseException | None) -> None:
                inside.append(reading)
                heard(ok, error)

            until = asyncio.get_running_loop().time() + 60
            assert client.send("NodeAccess", [{}, 1], answered, until=until)
            assert await heard.one() == (["a"], None)
            await client.close()

    run_bounded(body(), timeout=60)
    assert inside == [True]


def test_a_refusal_drcs_answered_is_heard_as_its_error_and_the_link_stays(loopback: Any) -> None:
    async def body() -> None:
        async with loopback.server(Served("a")):
            client = loopback.client(timeout=5)
            await client.call("Ping")
            heard = Heard()
            until = asyncio.get_running_loop().time() + 60
            assert client.send("Refuse", [], heard, until=until)
            ok, error = await heard.one()
            assert ok is None and isinstance(error, DrcError) and error.code is Code.EPERM
            assert client.connected  # an answer, not a broken link
            await client.close()

    run_bounded(body(), timeout=60)


def test_a_silent_drcs_fails_the_link_after_its_timeout(loopback: Any) -> None:
    """As call(): past the link's own timeout the connection is dropped (a late answer must not
    be taken for a later request's), and every request waiting on it hears why."""

    async def body() -> None:
        async with loopback.server(Silent()):
            client = loopback.client(timeout=0.5)
            await client.call("Ping")
            heard = Heard()
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert client.send("NodeAccess", [{}, 1], heard, until=t0 + 60)
            ok, error = await heard.one()
            assert 0.45 < loop.time() - t0 < 3
            assert ok is None and isinstance(error, DrcError)
            assert error.code is Code.ECONNREFUSED and "no answer within 0.5 s" in error.message
            assert not client.connected
            await client.close()

    run_bounded(body(), timeout=60)


def test_the_callers_deadline_ends_the_wait_and_keeps_the_link(loopback: Any) -> None:
    """A deadline before the link's own timeout is the caller's (its request budget ran out):
    TimeoutError, as call() raises it, and the connection stays for the other calls."""

    async def body() -> None:
        async with loopback.server(Silent()):
            client = loopback.client(timeout=30)
            await client.call("Ping")
            heard = Heard()
            loop = asyncio.get_running_loop()
            assert client.send("NodeAccess", [{}, 1], heard, until=loop.time() + 0.3)
            ok, error = await heard.one()
            assert ok is None and isinstance(error, TimeoutError)
            assert client.connected
            assert await client.call("Ping") == ["Ping"]  # the same connection
            await client.close()

    run_bounded(body(), timeout=60)


def test_a_drcs_older_than_keyed_answers_makes_send_unsent(loopback: Any, monkeypatch) -> None:
    """A rolling upgrade: the old DRCS refuses the key before running anything; send() hears
    Unsent (ask again with call()), and no request goes keyed on that connection again."""
    monkeypatch.setattr(protocol, "_REQUEST_FIELDS", frozenset(("id", "method", "args", "rid")))
    served = Served("a")

    async def body() -> None:
        async with loopback.server(served):
            client = loopback.client(timeout=5)
            assert await client.call("Ping") == ["a"]  # asked twice: keyed, then not
            heard = Heard()
            until = asyncio.get_running_loop().time() + 60
            assert not client.send("NodeAccess", [{}, 1], heard, until=until)  # known now
            client._conn.keyed = True  # as if this were the first request to it
            assert client.send("NodeAccess", [{}, 1], heard, until=until)
            ok, error = await heard.one()
            assert ok is None and isinstance(error, Unsent)
            assert not client._conn.keyed
            await client.close()

    run_bounded(body(), timeout=60)
    assert served.seen == [("Ping", None)]  # the refused ones never ran


def test_failover_send_goes_on_as_call_when_its_drcs_dies(loopback: Any) -> None:
    """The first attempt went by the fast lane to a DRCS that then died: the request is
    retried on the next DRCS within the call's budget, and the caller hears that answer."""
    first, second = Served("a"), Served("b")

    async def body() -> None:
        async with loopback.server(second, "b"):
            server_a = loopback.server(first, "a")
            await server_a.start()
            link = failover(loopback, ["a", "b"], timeout=6.0)
            assert await link.call("Ping") == ["a"]
            silent = Silent()
            server_a.handler = silent  # the next request waits for ever, then the DRCS dies
            heard = Heard()
            assert link.send("NodeAccess", [{}, 1], heard)
            await asyncio.sleep(0.2)
            await server_a.close()
            assert await heard.one() == (["b"], None)
            assert link.choice.current == "b"
            assert silent.calls == ["NodeAccess"] and second.seen == [("NodeAccess", None)]
            await link.close()

    run_bounded(body(), timeout=60)


def test_failover_send_leaves_exactly_once_verbs_to_call(loopback: Any) -> None:
    """A verb with a request id (exactly-once) is never sent by the fast lane."""

    async def body() -> None:
        async with loopback.server(Served("a")):
            link = failover(loopback, ["a"])
            await link.call("Ping")
            assert not link.send("NodeAcquire", [{}, 0], Heard())
            await link.close()

    run_bounded(body(), timeout=60)


@pytest.mark.parametrize("refused", [True, False])
def test_failover_send_hears_a_refusal_once_and_stays(loopback: Any, refused: bool) -> None:
    async def body() -> None:
        async with loopback.server(Served("a")):
            link = failover(loopback, ["a", "b"])
            await link.call("Ping")
            heard = Heard()
            assert link.send("Refuse" if refused else "NodeAccess", [], heard)
            ok, error = await heard.one()
            if refused:
                assert ok is None and isinstance(error, DrcError) and error.code is Code.EPERM
            else:
                assert (ok, error) == (["a"], None)
            assert link.choice.current == "a"
            await link.close()

    run_bounded(body(), timeout=60)


def test_a_caller_failing_on_its_answer_does_not_fail_the_link(loopback: Any, caplog) -> None:
    """As a future's done callback would: logged, and the calls sharing the connection go on."""

    async def body() -> None:
        async with loopback.server(Served("a")):
            client = loopback.client(timeout=5)
            await client.call("Ping")

            def broken(ok: Any, error: BaseException | None) -> None:
                raise RuntimeError("the caller's bug")

            until = asyncio.get_running_loop().time() + 60
            assert client.send("NodeAccess", [{}, 1], broken, until=until)
            other = asyncio.ensure_future(client.call("NodeWatch", []))
            assert await other == ["a"]
            assert client.connected
            await client.close()

    run_bounded(body(), timeout=60)
    assert "answering request" in caplog.text and "the caller's bug" in caplog.text
