"""DRCS over a real dbus-daemon, driven by real users through drccli and the bus."""

from __future__ import annotations

import json

import pytest

from drc.core.model import Flags

from cluster import STAFF_GROUP, Cluster, User
from helpers import LATEST_MIGRATION

ACCESS = (
    "import sys; from drc.serverclient import ServerProxy; "
    "print(*ServerProxy().access(int(sys.argv[1])))"
)
RELEASE = (
    "import sys; from drc.serverclient import ServerProxy; "
    "print(ServerProxy().release(int(sys.argv[1])))"
)


def access_as(cluster: Cluster, user: str, cred: int):
    return cluster.run_as(user, ["/usr/bin/python3", "-c", ACCESS, str(cred)])


def acquire_as(cluster: Cluster, user: str, *flags: str) -> int:
    out = cluster.drccli(user, "acquire", *flags, check=True).stdout
    return int(out.strip())


def listing(cluster: Cluster, cred: int) -> dict:
    (one,) = json.loads(cluster.drccli(None, "list", "--json", "-c", str(cred), check=True).stdout)
    return one


def test_alice_grants_bob_and_carol_is_refused(cluster: Cluster, users: dict[str, User]):
    cred = acquire_as(cluster, "alice", "--flex")
    info = listing(cluster, cred)
    assert (info["uid"], info["gid"]) == (users["alice"].uid, users["alice"].gid)

    cluster.drccli("alice", "grant", str(cred), "-u", "bob", check=True)
    bob = access_as(cluster, "bob", cred)
    assert bob.returncode == 0, bob.stderr
    assert int(bob.stdout.split()[1]) == info["cookie1"]

    carol = access_as(cluster, "carol", cred)
    assert carol.returncode != 0
    assert "DRC_EPERM" in carol.stderr or "EPERM" in carol.stderr
    assert listing(cluster, cred)["refs"] == 2  # carol took nothing


def test_carol_cannot_grant_or_revoke_alices_credential(cluster: Cluster, users):
    cred = acquire_as(cluster, "alice")
    for verb in ("grant", "revoke"):
        r = cluster.drccli("carol", verb, str(cred), "-u", "carol")
        assert r.returncode == 1
        assert r.stderr.startswith("drccli: DRC_EPERM: only the owner"), r.stderr
    assert listing(cluster, cred)["grants"] == []


def test_group_grant_reaches_members_only(cluster: Cluster, users):
    cred = acquire_as(cluster, "alice", "--flex")
    cluster.drccli("alice", "grant", str(cred), "-g", STAFF_GROUP, check=True)
    assert access_as(cluster, "bob", cred).returncode == 0  # bob is in drcstaff
    assert access_as(cluster, "carol", cred).returncode != 0


def test_grant_twice_exits_1_with_already_granted(cluster: Cluster, users):
    cred = acquire_as(cluster, "alice")
    cluster.drccli("alice", "grant", str(cred), "-j", "4242", check=True)
    r = cluster.drccli("alice", "grant", str(cred), "-j", "4242")
    assert r.returncode == 1 and "DRC_ALREADY_GRANTED" in r.stderr


def test_holder_release_then_owner_release_frees_the_cookie(cluster: Cluster, users):
    cred = acquire_as(cluster, "alice", "--flex")
    cluster.drccli("alice", "grant", str(cred), "-u", "bob", check=True)
    assert access_as(cluster, "bob", cred).returncode == 0
    bob = cluster.run_as("bob", ["/usr/bin/python3", "-c", RELEASE, str(cred)])
    assert bob.stdout.strip() == "False", bob.stderr  # bob's own reference, not EPERM
    assert listing(cluster, cred)["state"] == "ACTIVE"
    r = cluster.drccli("alice", "release", str(cred), check=True)
    assert "returned to the pool" in r.stdout
    r = cluster.drccli(None, "list", "-c", str(cred))
    assert r.returncode == 1
    assert r.stdout.strip() == "Credential Not Found"
    assert "DRC_CRED_NOT_FOUND" in r.stderr


def test_list_columns_as_in_the_paper(cluster: Cluster, users):
    cred = acquire_as(cluster, "alice")
    lines = cluster.drccli(None, "list", check=True).stdout.splitlines()
    assert lines[0].split() == [
        "Credential",
        "Sys_Id",
        "uid",
        "gid",
        "wlmid",
        "Cookie1",
        "Cookie2",
        "State",
        "Refs",
    ]
    row = lines[1].split()
    assert row[0] == str(cred) and row[2] == str(users["alice"].uid) and row[-2:] == ["ACTIVE", "1"]


def test_users_see_only_credentials_they_may_access(cluster: Cluster, users):
    mine = acquire_as(cluster, "alice")
    acquire_as(cluster, "bob")
    seen = json.loads(cluster.drccli("alice", "list", "--json", check=True).stdout)
    assert [c["credential"] for c in seen] == [mine]


@pytest.mark.parametrize(
    "argv",
    [("limit", "--global", "3"), ("expire", "77"), ("status",), ("acquire", "--persistent")],
)
def test_admin_verbs_are_refused_to_plain_users(cluster: Cluster, users, argv):
    r = cluster.drccli("carol", *argv)
    assert r.returncode == 1
    assert "DRC_EPERM" in r.stderr
    assert cluster.server().limits() == []


def test_root_sets_limits_that_bind_users(cluster: Cluster, users):
    cluster.drccli(None, "limit", "-u", "alice", "1", check=True)
    acquire_as(cluster, "alice")
    r = cluster.drccli("alice", "acquire")
    assert r.returncode == 1 and "DRC_ENOSPC" in r.stderr
    acquire_as(cluster, "bob")  # the uid limit is alice's only
    assert "uid" in cluster.drccli(None, "limit", check=True).stdout


def test_status_reports_store_and_pool(cluster: Cluster, users):
    acquire_as(cluster, "alice")
    out = cluster.drccli(None, "status", check=True).stdout
    assert "sqlite" in out and f"schema {LATEST_MIGRATION}" in out
    assert "1 allocated, 1023 free of 1024" in out
    assert "Nodes:       1 connected (following DRCS's change feed), 1 known" in out


def test_identity_comes_from_the_bus_not_the_environment(cluster: Cluster, users):
    forged = {"USER": "alice", "LOGNAME": "alice", "SLURM_JOB_ID": "1", "UID": "0"}
    cred = int(cluster.drccli("carol", "acquire", extra_env=forged, check=True).stdout)
    assert listing(cluster, cred)["uid"] == users["carol"].uid


def test_acquire_flags_reach_the_server(cluster: Cluster, users):
    cred = acquire_as(cluster, "alice", "--flex")
    assert listing(cluster, cred)["flags"] == int(Flags.FLEX_CREDENTIAL)


def test_list_shows_who_holds_each_reference(cluster: Cluster, users):
    """A RELEASED credential kept alive by a job: `list -c` names the job and node, and
    `list --json` is a list of the same objects with or without -c."""
    cred = acquire_as(cluster, None, "--persistent", "--flex")
    cluster.drccli(None, "grant", str(cred), "-j", "515", check=True)
    job = cluster.in_job(515, "bob", f"client.access({cred})", check=True)
    assert job.returncode == 0, job.stderr
    cluster.drccli(None, "release", str(cred), check=True)  # the owner's pin goes

    text = cluster.drccli(None, "list", "-c", str(cred), check=True).stdout
    assert "RELEASED" in text, text
    node = listing(cluster, cred)["holders"][0]["node"]
    assert text.splitlines()[-2:] == [
        f"Holders of credential {cred}:",
        f"  job 515 on node {node}",
    ]
    one = json.loads(cluster.drccli(None, "list", "--json", "-c", str(cred), check=True).stdout)
    every = json.loads(cluster.drccli(None, "list", "--json", check=True).stdout)
    assert isinstance(one, list) and one == [c for c in every if c["credential"] == cred]
    assert one[0]["holders"] == [{"kind": "job", "node": node, "job": 515}]
    assert one[0]["refs"] == 1

    cluster.end_job(515)
    r = cluster.drccli(None, "list", "-c", str(cred))
    assert r.returncode == 1 and "Credential Not Found" in r.stdout  # the job's end freed it
