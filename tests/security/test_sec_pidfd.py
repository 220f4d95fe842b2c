"""The caller's pidfd (``ProcessFD``), and what the bus exporter does with descriptors.

Buses that send ``ProcessFD`` (dbus-daemon >= 1.15.8 built with SO_PEERPIDFD, dbus-broker
>= 35) are not installable here (Debian 12: dbus-daemon 1.14, dbus-broker 33), so the real-bus
attack tests run the fallback. These tests drive the pidfd path with real pidfds of real
processes, in a ``GetConnectionCredentials`` answer shaped as the bus sends it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections.abc import Iterator

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from pidreuse import SCENARIOS, PidTaken

from drc.bus.exporter import BusExporter, peer_credentials
from drc.core.errors import Code, DrcError
from drc.export import PeerCredentials
from drc.node.caller import Identifier
from drc.node.exports import BUS_NAME, INTERFACE, OBJECT_PATH
from drc.procfs import PidFd, connecting_process
from drc.wlm.base import NoWlm

from cluster import Cluster, User

NOBODY = 65534


def answer(uid: int, pid: int, fd_index: int) -> dict[str, Variant]:
    """``GetConnectionCredentials``'s a{sv}, as dbus-fast unmarshals it (fds by index)."""
    return {
        "UnixUserID": Variant("u", uid),
        "UnixGroupIDs": Variant("au", [uid]),
        "ProcessID": Variant("u", pid),
        "ProcessFD": Variant("h", fd_index),
    }


@pytest.fixture
def sleeper() -> Iterator:
    """``start(uid)``: a real process of ``uid``, killed by pid at the end."""
    started: list[subprocess.Popen] = []

    def start(uid: int = NOBODY) -> subprocess.Popen:
        proc = subprocess.Popen(["sleep", "60"], user=uid, group=uid, extra_groups=[])
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_the_reply_pidfd_binds_the_peer_to_its_process(sleeper, users) -> None:
    proc = sleeper()
    spare = os.open("/dev/null", os.O_RDONLY)
    fds = [spare, os.pidfd_open(proc.pid)]
    peer = peer_credentials(":1.7", answer(NOBODY, proc.pid, 1), fds, since=0.0)
    try:
        assert fds == [spare, -1]  # the pidfd now belongs to the peer; the rest is closed
        assert peer is not None and peer.process is not None
        snap = connecting_process(peer)
        assert (snap.pid, snap.euid, snap.ruid) == (proc.pid, NOBODY, NOBODY)
    finally:
        os.close(spare)
        if peer is not None and peer.process is not None:
            peer.process.close()


def test_with_a_pidfd_a_reused_pid_is_refused_even_where_the_fallback_accepts(
    sleeper, users, task_at_pid
) -> None:
    """The process that connected exits; its pid comes back as the same user's process, at an
    unknown connection time (``since`` None). The fallback cannot tell them apart; the pidfd
    can."""
    for _ in range(SCENARIOS):
        first = sleeper()
        handle = PidFd(os.pidfd_open(first.pid))
        first.kill()
        first.wait()  # reaped: the pid is free
        try:
            again = task_at_pid(first.pid, User("nobody", NOBODY, NOBODY))
            break
        except PidTaken:
            handle.close()  # another process took the pid: try with another
    else:
        raise AssertionError(f"pid reuse could not be set up in {SCENARIOS} tries")
    with_fd = PeerCredentials(NOBODY, frozenset(), first.pid, ":1.8", process=handle)
    without = PeerCredentials(NOBODY, frozenset(), first.pid, ":1.8")
    try:
        with pytest.raises(DrcError, match="has exited") as refused:
            connecting_process(with_fd)
        assert refused.value.code is Code.EPERM
        snap = connecting_process(without)  # the fallback's documented limit
        assert (snap.pid, snap.euid) == (again, NOBODY)
    finally:
        handle.close()


def test_a_closed_pidfd_never_answers_for_anyone(sleeper, users) -> None:
    proc = sleeper()
    handle = PidFd(os.pidfd_open(proc.pid))
    assert handle.pid() == proc.pid and handle.alive()
    handle.close()
    handle.close()  # idempotent
    assert handle.pid() == 0 and not handle.alive()
    peer = PeerCredentials(NOBODY, frozenset(), proc.pid, ":1.9", process=handle)
    with pytest.raises(DrcError, match="has exited"):
        connecting_process(peer)


def test_with_a_pidfd_drcc_forgets_a_callers_identity_when_its_process_exits(
    sleeper, users
) -> None:
    proc = sleeper()
    handle = PidFd(os.pidfd_open(proc.pid))
    peer = PeerCredentials(NOBODY, frozenset(), proc.pid, ":1.10", process=handle)
    identifier = Identifier("n1", NoWlm())
    try:
        assert identifier.caller(peer).pid == proc.pid  # remembered for CALLER_TTL
        proc.kill()
        proc.wait()
        with pytest.raises(DrcError, match="has exited"):
            identifier.caller(peer)
    finally:
        handle.close()


def _name_owner_changed(name: str, old: str, new: str) -> Message:
    return Message(
        message_type=MessageType.SIGNAL,
        sender="org.freedesktop.DBus",
        path="/org/freedesktop/DBus",
        interface="org.freedesktop.DBus",
        member="NameOwnerChanged",
        signature="sss",
        body=[name, old, new],
    )


def test_the_exporter_keeps_a_pidfd_while_the_name_lives_and_dates_new_names(sleeper) -> None:
    exporter = BusExporter(object(), bus_name="org.drc.T", object_path="/t", interface="org.drc.T")
    proc = sleeper(os.getuid())
    exporter._on_message(_name_owner_changed(":1.20", "", ":1.20"))
    assert exporter._appeared[":1.20"] > 0  # CLOCK_BOOTTIME of the connection's appearance
    handle = PidFd(os.pidfd_open(proc.pid))
    exporter._peers[":1.20"] = PeerCredentials(0, frozenset(), proc.pid, ":1.20", process=handle)
    exporter._on_message(_name_owner_changed(":1.20", ":1.20", ""))
    assert ":1.20" not in exporter._peers and ":1.20" not in exporter._appeared
    assert not handle.alive()  # closed with the name: its number can no longer be trusted


def test_descriptors_attached_to_calls_do_not_pile_up_in_drcc(cluster: Cluster, users) -> None:
    """Since DRCC takes descriptors (for ProcessFD), a caller could send one with every call;
    DRCC closes them instead of keeping them until it runs out."""
    drcc_fds = f"/proc/{cluster.drcc_pid}/fd"
    calls = 40

    async def flood() -> list[str]:
        bus = await MessageBus(bus_address=cluster.address, negotiate_unix_fd=True).connect()
        names = []
        try:
            for _ in range(calls):
                fd = os.open("/dev/null", os.O_RDONLY)
                try:
                    reply = await bus.call(
                        Message(
                            destination=BUS_NAME,
                            path=OBJECT_PATH,
                            interface=INTERFACE,
                            member="GetWlmId",
                            unix_fds=[fd],
                        )
                    )
                finally:
                    os.close(fd)
                names.append(reply.error_name or "ok")
        finally:
            bus.disconnect()
        return names

    before = len(os.listdir(drcc_fds))
    assert asyncio.run(flood()) == ["ok"] * calls  # answered as ever
    assert len(os.listdir(drcc_fds)) < before + 5
