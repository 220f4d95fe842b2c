"""drcs and drcc speak systemd's notify protocol for real: started (by drc-embedded) with
NOTIFY_SOCKET and WATCHDOG_USEC pointing at a datagram socket of this test, each says READY=1
once it serves, then WATCHDOG=1 every half WATCHDOG_USEC while its event loop turns, and
STOPPING=1 on SIGTERM. A stopped (SIGSTOP) daemon stops pinging: systemd would restart it."""

from __future__ import annotations

import os
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Iterator

import pytest

from drc.embedded.processes import alive
from drc.embedded.runtime import Runtime

from cluster import Cluster, User, start_cluster, stop_cluster

WATCHDOG_USEC = 400_000  # pings every 0.2 s
UCRED = struct.Struct("iII")  # pid, uid, gid


class Listener:
    """The notify socket systemd would hold; each datagram comes with its sender's pid."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, seconds: float) -> list[tuple[int, str]]:
        """(pid, state line) of every datagram arriving within ``seconds``."""
        got: list[tuple[int, str]] = []
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, ancdata, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except TimeoutError:
                break
            pid = next(
                UCRED.unpack(d[: UCRED.size])[0]
                for level, kind, d in ancdata
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
            )
            got += [(pid, line) for line in data.decode().splitlines()]
        return got

    def expect(self, wanted: set[tuple[int, str]], seconds: float) -> None:
        seen: list[tuple[int, str]] = []
        end = time.monotonic() + seconds
        while not wanted <= set(seen) and time.monotonic() < end:
            seen += self.read(min(0.5, end - time.monotonic()))
        assert wanted <= set(seen), (wanted, seen)


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    with tempfile.TemporaryDirectory(prefix="drc-notify-", dir="/tmp") as d:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            sock.bind(f"{d}/notify")
            # the daemons drc-embedded spawns inherit these, as from systemd
            monkeypatch.setenv("NOTIFY_SOCKET", f"{d}/notify")
            monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
            yield Listener(sock)
        finally:
            sock.close()


@pytest.fixture
def notified(runtime: Runtime, users: dict[str, User], listener: Listener) -> Iterator[Cluster]:
    c = start_cluster(runtime)
    try:
        yield c
    finally:
        for pid in (c.drcs_pid, c.drcc_pid):
            if alive(pid):  # a stopped daemon must still get its SIGTERM
                os.kill(pid, signal.SIGCONT)
        stop_cluster(c)


def pings(messages: list[tuple[int, str]], pid: int) -> int:
    return sum(1 for p, line in messages if p == pid and line == "WATCHDOG=1")


def test_ready_then_watchdog_from_the_loop_then_stopping(
    notified: Cluster, listener: Listener
) -> None:
    drcs, drcc = notified.drcs_pid, notified.drcc_pid
    listener.expect({(drcs, "READY=1"), (drcc, "READY=1")}, 15)

    running = listener.read(1.2)
    assert pings(running, drcs) >= 4 and pings(running, drcc) >= 4, running

    os.kill(drcs, signal.SIGSTOP)  # a frozen loop: its pings stop, the other daemon's go on
    try:
        listener.read(0.1)  # what was already sent
        frozen = listener.read(1.2)
    finally:
        os.kill(drcs, signal.SIGCONT)
    assert pings(frozen, drcs) == 0, frozen
    assert pings(frozen, drcc) >= 4, frozen
    assert pings(listener.read(1.0), drcs) >= 3  # and back once it runs

    stop_cluster(notified)  # SIGTERM to both
    listener.expect({(drcs, "STOPPING=1"), (drcc, "STOPPING=1")}, 10)
