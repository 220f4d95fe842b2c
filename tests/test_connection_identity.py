"""DRCS reads a D-Bus caller's primary gid from /proc once per connection, not per call, and
only from the process that opened the connection."""

from __future__ import annotations

import gc
import subprocess

import pytest

from drc.bus import PeerCredentials
from drc.core.errors import Code, DrcError
from drc.server import exports


def test_gid_read_once_per_connection_and_forgotten_with_it(mocker) -> None:
    spy = mocker.spy(exports, "connecting_process")
    before = len(exports._connection_gids)
    child = subprocess.Popen(["sleep", "30"], user=65534, group=4242)
    try:
        peer = PeerCredentials(uid=65534, gids=frozenset({4242}), pid=child.pid, sender=":1.900")
        assert [exports.direct_caller(peer).gid for _ in range(3)] == [4242] * 3
        assert spy.call_count == 1  # the kernel's answer, read once for this connection
        other = PeerCredentials(uid=65534, gids=frozenset(), pid=child.pid, sender=":1.901")
        assert exports.direct_caller(other).gid == 4242
        assert spy.call_count == 2  # another connection is read afresh
        spy.reset_mock()  # the spy's call records hold the connections too
        del peer, other
        gc.collect()
        assert len(exports._connection_gids) == before  # gone with the bus's cached credentials
    finally:
        child.kill()
        child.wait()


def test_a_pid_now_run_by_another_user_gives_drcs_no_gid() -> None:
    """A connection of uid 65534 whose pid now belongs to another user's process (uid 65533,
    gid 4243): DRCS refuses instead of handing the connection that process's group."""
    child = subprocess.Popen(["sleep", "30"], user=65533, group=4243)
    try:
        peer = PeerCredentials(uid=65534, gids=frozenset(), pid=child.pid, sender=":1.902")
        with pytest.raises(DrcError, match="pid was reused") as refused:
            exports.direct_caller(peer)
        assert refused.value.code is Code.EPERM
        assert peer not in exports._connection_gids
    finally:
        child.kill()
        child.wait()
