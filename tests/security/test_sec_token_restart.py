"""Attack: a revoked (or freed) credential's token, shown to a DRCC started after the revoke
(issue 20, item 2).

A DRCC learns revocations from DRCS's change feed, which only tells what happens after it
started. carol keeps a token alice gave her, alice revokes carol (or frees the credential),
the node's DRCC restarts: the new DRCC has never heard of the credential. It must ask DRCS
for its epoch, and refuse while DRCS cannot answer, instead of taking the token's word.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from drc.embedded.runtime import Runtime

from cluster import Cluster, User, start_cluster, stop_cluster

GRANT_CAROL_AND_TOKEN = """
import pwd
cred = client.acquire(client.FLEX)
client.grant(cred, uid=pwd.getpwnam('carol').pw_uid)
print(cred, client.get_credential_token(cred), client.access(cred).cookie1)
"""
WITH_TOKEN = """
import sys
try:
    print('ok', client.access_with_token(sys.argv[1]).cookie1)
except client.DrcError as e:
    print('refused', e.name)
"""


@pytest.fixture
def quick_link_cluster(runtime: Runtime) -> Iterator[Cluster]:
    """A cluster whose DRCC gives up on a silent DRCS after 1 s (the default is 5)."""

    def configure(config: Path) -> None:
        config.write_text(config.read_text().replace("[link]\n", "[link]\ntimeout = 1\n", 1))

    c = start_cluster(runtime, configure)
    try:
        yield c
    finally:
        stop_cluster(c)


def alice_shares_with_carol(cluster: Cluster) -> tuple[int, str, int]:
    """alice (job 101) acquires, grants carol, and hands her a token: (credential, token,
    cookie)."""
    r = cluster.in_job(101, "alice", GRANT_CAROL_AND_TOKEN)
    assert r.returncode == 0, r.stderr
    cred, token, cookie = r.stdout.split()
    return int(cred), token, int(cookie)


def as_alice(cluster: Cluster, code: str) -> None:
    r = cluster.in_job(101, "alice", code)
    assert r.returncode == 0, r.stderr


def restart_drcc(cluster: Cluster) -> None:
    os.kill(cluster.drcc_pid, signal.SIGTERM)
    os.waitpid(cluster.drcc_pid, 0)
    cluster.emb.start_node()


def carol_with(cluster: Cluster, token: str) -> list[str]:
    r = cluster.outside_job("carol", WITH_TOKEN.replace("sys.argv[1]", repr(token)))
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def state(cluster: Cluster) -> list[dict]:
    return sorted(cluster.server().list(), key=lambda c: c["credential"])


def test_a_token_revoked_before_drcc_restarted_is_refused(cluster: Cluster, users) -> None:
    cred, token, _ = alice_shares_with_carol(cluster)
    as_alice(cluster, f"import pwd\nclient.revoke({cred}, uid=pwd.getpwnam('carol').pw_uid)")
    restart_drcc(cluster)
    before = state(cluster)
    assert carol_with(cluster, token) == ["refused", "DRC_BAD_TOKEN"]
    assert state(cluster) == before  # no reference for carol, reported or not
    assert cluster.counters().get("token_access_local", 0) == 0


def test_a_freed_credentials_token_does_not_hand_out_its_recycled_cookie(
    cluster: Cluster, users: dict[str, User]
) -> None:
    cred, token, cookie = alice_shares_with_carol(cluster)
    as_alice(cluster, f"client.release({cred})")  # alice's only reference: freed
    restart_drcc(cluster)
    r = cluster.in_job(202, "bob", "info = client.access(client.acquire())\nprint(info.cookie1)")
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == cookie  # the freed credential's cookie is bob's now
    before = state(cluster)
    assert carol_with(cluster, token) == ["refused", "DRC_BAD_TOKEN"]
    assert state(cluster) == before


def test_while_drcs_is_down_a_restarted_drcc_honours_only_tokens_it_can_check(
    quick_link_cluster: Cluster, users
) -> None:
    cluster = quick_link_cluster
    unseen, unseen_token, _ = alice_shares_with_carol(cluster)
    restart_drcc(cluster)
    known, known_token, _ = alice_shares_with_carol(cluster)  # this DRCC saw it (acquired here)
    os.kill(cluster.drcs_pid, signal.SIGSTOP)  # DRCS cannot answer anything now
    try:
        assert carol_with(cluster, known_token)[0] == "ok"
        assert carol_with(cluster, unseen_token) == ["refused", "DRC_ECONNREFUSED"]
    finally:
        os.kill(cluster.drcs_pid, signal.SIGCONT)
    assert cluster.counters()["token_epoch_unknown"] == 1
    # Once DRCS answers again, the unseen credential's token is checked and works.
    assert carol_with(cluster, unseen_token)[0] == "ok"
    assert {unseen, known} <= {c["credential"] for c in state(cluster)}
