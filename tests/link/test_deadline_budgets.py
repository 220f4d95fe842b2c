"""Deadlines nest: every client of DRCC waits longer than DRCC's whole budget for DRCS, and a
request that asks DRCS twice still fits that one budget (real link servers on loopback)."""

from __future__ import annotations

import asyncio
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from drc import client, config
from drc.core.errors import Code, DrcError
from drc.embedded.polling import free_port
from drc.link import LinkClient, Munge
from drc.link.failover import FailoverLink, ServerChoice, request_budget
from drc.link.server import LinkPeer

from helpers import run_bounded

REPO = Path(__file__).resolve().parents[2]


def test_every_client_waits_longer_than_drccs_default_budget() -> None:
    budget = config.SCHEMA["link"]["timeout"].default
    assert budget + config.DEADLINE_MARGIN <= config.CLIENT_TIMEOUT
    assert client.DEFAULT_TIMEOUT == config.CLIENT_TIMEOUT
    header = (REPO / "lib" / "rdmacred.h").read_text()
    ms = re.search(r"#define DRC_DEFAULT_TIMEOUT_MS (\d+)", header)
    assert ms and int(ms[1]) == config.CLIENT_TIMEOUT * 1000  # libdrc
    spank = (REPO / "plugins" / "spank" / "drc_spank.c").read_text()
    assert "#define CALL_TIMEOUT_USEC (DRC_DEFAULT_TIMEOUT_MS * 1000ULL)" in spank


class Slow:
    """Answers every call after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def __call__(
        self, peer: LinkPeer, method: str, args: list[Any], rid: str | None
    ) -> list[Any]:
        await asyncio.sleep(self.delay)
        return ["done"]


def test_calls_made_for_one_request_share_its_budget(loopback: Any) -> None:
    """Each call alone fits the link's 1 s; two in one request_budget(1) do not: the second
    ends when the request's budget does, with the reason."""

    async def body() -> tuple[float, DrcError]:
        def make(server: str) -> LinkClient:
            return loopback.client(server, timeout=1.0)

        async with loopback.server(Slow(0.6), "a"):
            link = FailoverLink(ServerChoice(["a"]), make, timeout=1.0, rid_prefix="n1-x")
            assert await link.call("NodeRelease", [{}, 1]) == ["done"]  # alone: fits
            start = time.monotonic()
            with pytest.raises(DrcError) as e, request_budget(1.0):
                await link.call("NodeTokenReferences", ["n1", []])
                await link.call("NodeRelease", [{}, 2])
            took = time.monotonic() - start
            # the server was slow, not dead: still followed, and its connection still serves
            assert link.choice.answering
            assert await link.call("NodeRelease", [{}, 3]) == ["done"]
            await link.close()
            return took, e.value

    took, error = run_bounded(body())
    assert error.code is Code.ECONNREFUSED
    assert 0.9 <= took < 1.4, took
    # the second call had what the first left: about 0.4 s
    assert re.search(
        r"no DRCS answered within 0\.[345] s \(a: no answer within 0\.[345] s\)", error.message
    )


def test_a_dead_munged_on_this_node_is_named_not_drcs() -> None:
    """The server listens; what fails is this node's munged: the message says so."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", free_port()))
    listener.listen(4)
    server = f"127.0.0.1:{listener.getsockname()[1]}"
    munge = Munge("/nonexistent/munge.socket.2")

    async def body() -> DrcError:
        def make(target: str) -> LinkClient:
            host, port = target.rsplit(":", 1)
            return LinkClient(host, int(port), munge=munge, server_uid=0, timeout=0.5)

        link = FailoverLink(ServerChoice([server]), make, timeout=1.0, rid_prefix="n1-x")
        try:
            with pytest.raises(DrcError) as e:
                await link.call("NodeAcquire", [{}, 0])
            return e.value
        finally:
            await link.close()

    try:
        error = run_bounded(body())
    finally:
        listener.close()
    assert error.code is Code.ECONNREFUSED
    assert f"({server}: this node's munged: " in error.message
    assert error.message.endswith("check munge.service on this node"), error.message
