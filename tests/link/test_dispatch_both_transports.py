"""One dispatch path: the same call over DRCS's bus and over the DRC link gets the same answer.

A real dbus-daemon (the shipped policy), a real munged, a real SQLite store: DRCS's node verbs
served on both transports as drcs serves them (drc.server.main). Before the one dispatcher, a
verb that crashed answered CRED_EXTERNAL_FAILURE on the bus but EINVAL on the link (a code
callers retry forever), and a refusal was audited on the bus only.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import drc
from drc.bus import BusExporter, SyncBusClient
from drc.core.errors import Code, DrcError
from drc.core.service import CredentialService
from drc.embedded.dbusd import start_private_bus, stop_private_bus
from drc.link import Munge, SyncLinkClient
from drc.server.exports import ServerExports
from drc.server.link_exporter import link_server

POLICY = Path(drc.__file__).parent / "data" / "org.drc.conf"
SERVER = ("org.drc.Server", "/org/drc/Server", "org.drc.Server")
ALICE = {"uid": 1001, "gid": 1001, "job": 7, "node": "n1"}

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="calls node verbs as root")


class Both:
    """DRCS's node verbs on a private bus and on the DRC link, and a client of each."""

    def __init__(self, service: CredentialService, munge_socket: str) -> None:
        self.state = Path(tempfile.mkdtemp(prefix="drc-dispatch-", dir="/tmp"))
        self.state.chmod(0o755)
        self.bus = start_private_bus(self.state, policy_files=[POLICY])
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.exports = ServerExports(service)
        self.exporter = BusExporter(
            self.exports,
            self.exports.nodes,
            bus_name=SERVER[0],
            object_path=SERVER[1],
            interface=SERVER[2],
        )
        self.link = link_server(
            self.exports.nodes,
            "127.0.0.1:0",
            munge_socket=munge_socket,
            node_uids={0},
            audit=self.exports.refused,
        )
        self.run(self.exporter.start(self.bus.address))
        self.run(self.link.start())
        host, port = self.link.tcp_address
        self.on_bus = SyncBusClient(self.bus.address)
        self.on_link = SyncLinkClient(host, port, munge=Munge(munge_socket), server_uid=0)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def both(self, method: str, signature: str, args: list[Any]) -> tuple[Any, Any]:
        """What each transport answered: its out args, or the DrcError it carried."""
        answers = []
        for send in (
            lambda: self.on_bus.call(*SERVER, method, signature, args),
            lambda: self.on_link.call(method, args),
        ):
            try:
                answers.append(send())
            except DrcError as err:
                answers.append(err)
        return answers[0], answers[1]

    def close(self) -> None:
        self.on_bus.close()
        self.on_link.close()
        try:
            self.run(self.link.close())
            self.run(self.exporter.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()
            stop_private_bus(self.bus)
            shutil.rmtree(self.state, ignore_errors=True)


@pytest.fixture
def both(service: CredentialService, munged: Any) -> Iterator[Both]:
    b = Both(service, munged.socket)
    try:
        yield b
    finally:
        b.close()


def test_a_crashing_verb_is_the_same_internal_error_on_both(both: Both, mocker) -> None:
    service = both.exports.nodes.service
    mocker.patch.object(service, "access_credential", side_effect=RuntimeError("bug"))
    cred = both.exports.nodes.service.acquire(_caller(), 0).id
    on_bus, on_link = both.both("NodeAccess", "a{sv}u", [ALICE, cred])
    assert isinstance(on_bus, DrcError) and isinstance(on_link, DrcError)
    assert on_bus.code is on_link.code is Code.CRED_EXTERNAL_FAILURE  # the link said EINVAL
    assert on_bus.message == on_link.message == "internal error in NodeAccess: bug"


def test_a_refusal_is_the_same_and_audited_on_both(both: Both) -> None:
    audit = both.exports.refusals
    on_bus, on_link = both.both("NodeAccess", "a{sv}u", [ALICE, 4242])
    assert isinstance(on_bus, DrcError) and isinstance(on_link, DrcError)
    assert on_bus.code is on_link.code is Code.CRED_NOT_FOUND
    assert on_bus.message == on_link.message
    assert audit.counts[Code.CRED_NOT_FOUND] == 2  # the link's was not audited before

    too_many = ["n1", list(range(100_000))]
    on_bus, on_link = both.both("NodeEpochs", "sau", too_many)
    assert isinstance(on_bus, DrcError) and isinstance(on_link, DrcError)
    assert (on_bus.code, on_bus.message) == (on_link.code, on_link.message)
    assert on_bus.code is Code.EINVAL

    # an answer, the same on both: the daemon lives on
    good = both.exports.nodes.service.acquire(_caller(), 0).id
    on_bus, on_link = both.both("NodeEpochs", "sau", ["n1", [good]])
    assert not isinstance(on_bus, DrcError) and list(map(list, on_bus[0])) == on_link[0]


def _caller() -> Any:
    from drc.wire import caller_from_wire

    return caller_from_wire(ALICE)
