"""DRCS reads a D-Bus caller's primary gid from /proc once per connection, not per call."""

from __future__ import annotations

import gc
import subprocess

from drc.bus import PeerCredentials
from drc.server import exports


def test_gid_read_once_per_connection_and_forgotten_with_it(mocker) -> None:
    spy = mocker.spy(exports, "process_gid")
    before = len(exports._connection_gids)
    child = subprocess.Popen(["sleep", "30"], user=65534, group=4242)
    try:
        peer = PeerCredentials(uid=65534, gids=frozenset({4242}), pid=child.pid, sender=":1.900")
        assert [exports.direct_caller(peer).gid for _ in range(3)] == [4242] * 3
        assert spy.call_count == 1  # the kernel's answer, read once for this connection
        other = PeerCredentials(uid=65534, gids=frozenset(), pid=child.pid, sender=":1.901")
        assert exports.direct_caller(other).gid == 4242
        assert spy.call_count == 2  # another connection is read afresh
        del peer, other
        gc.collect()
        assert len(exports._connection_gids) == before  # gone with the bus's cached credentials
    finally:
        child.kill()
        child.wait()
