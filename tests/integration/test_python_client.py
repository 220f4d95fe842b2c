"""drc.client, the Python libdrc, against the embedded DRCC (and without one)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from drc import client

from cluster import Cluster


@pytest.fixture
def local(cluster: Cluster, monkeypatch):
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", cluster.address)
    client.set_timeout(2.0)  # also drops any connection to an earlier test's bus
    yield cluster
    client.set_timeout(client.DEFAULT_TIMEOUT)


def refs(cluster: Cluster) -> list[tuple[int, int]]:
    return [(c["credential"], c["refs"]) for c in cluster.server().list()]


def test_context_managers_release_on_exit(local: Cluster, users):
    with client.acquired(client.FLEX) as cred:
        assert refs(local) == [(cred, 1)]
        with client.accessed(cred) as info:  # same holder: the same single association
            assert info.credential == cred and info.cookie1 > 0
    assert refs(local) == []
    # alice's, held by her pin: root's access adds its own reference, and releases only that
    pinned = int(local.drccli("alice", "acquire", "--flex", check=True).stdout)

    with client.accessed(pinned):
        assert refs(local) == [(pinned, 2)]
    assert refs(local) == [(pinned, 1)]


def test_grant_needs_exactly_one_target(local: Cluster):
    cred = client.acquire()
    for kwargs in ({}, {"uid": 1, "gid": 2}):
        with pytest.raises(client.DrcError) as err:
            client.grant(cred, **kwargs)
        assert err.value.name == "DRC_EFLAGS" and err.value.code == 10


def test_errors_carry_code_and_name(local: Cluster):
    with pytest.raises(client.DrcError) as err:
        client.access(987654)
    assert (err.value.code, err.value.name) == (6, "DRC_CRED_NOT_FOUND")


def test_no_drcc_is_econnrefused_within_the_timeout_then_recovers(local: Cluster):
    cred = client.acquire(client.FLEX)
    os.kill(local.drcc_pid, signal.SIGSTOP)  # alive but silent: the worst case
    try:
        t0 = time.monotonic()
        with pytest.raises(client.DrcError) as err:
            client.access(cred)
        assert err.value.name == "DRC_ECONNREFUSED"
        assert time.monotonic() - t0 < 2.0 + 1.0
    finally:
        os.kill(local.drcc_pid, signal.SIGCONT)
    os.kill(local.drcc_pid, signal.SIGKILL)
    with pytest.raises(client.DrcError) as err:
        client.access(cred)
    assert err.value.name == "DRC_ECONNREFUSED"
    local.emb.start_node()
    assert client.access(cred).credential == cred  # same process, no restart needed
