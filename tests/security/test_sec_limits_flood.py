"""One user emptying the pool for everyone, attacked by carol against a real embedded cluster.

carol acquires straight on DRCS's bus, where every credential is held by a pin of her uid with
no process behind it, as fast as DRCS answers. The shipped default per-user limit (10% of the
pool, drc.conf [server] user_limit) must stop her; bob must still get credentials; the admin
must see her pins and be able to expire them; and her hitting the limit must be audited once,
not once per refusal. Her pins on credentials she does not own count against her too.
"""

from __future__ import annotations

import json
from pathlib import Path

from cluster import Cluster
from workers import pool_free

#: carol's flood: acquire on DRCS's bus until refused, then 50 more tries (bounded: 2,000
#: calls, 60 s). Prints what she got and the refusals.
FLOOD = """
import json, time
from drc.core.errors import DrcError
from drc.serverclient import ServerProxy
server, got, refused, deadline = ServerProxy(), [], [], time.monotonic() + 60
for _ in range(2000):
    if len(refused) > 50 or time.monotonic() > deadline:
        break
    try:
        got.append(server.acquire(0))
    except DrcError as e:
        refused.append(f"{e.name}: {e.message}")
print(json.dumps({"got": got, "refused": refused}))
"""

POOL = 1024  # the embedded pool
SHARE = POOL // 10  # drc-embedded's user_limit = "10%"


def flood(cluster: Cluster, user: str) -> dict:
    r = cluster.python(user, FLOOD, timeout=90)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def audit_lines(cluster: Cluster, what: str) -> list[str]:
    log = (Path(cluster.state_dir) / "drcs.log").read_text()
    return [line for line in log.splitlines() if "drc.audit" in line and what in line]


def test_carol_cannot_empty_the_pool_for_everyone(cluster: Cluster, users) -> None:
    carol = flood(cluster, "carol")
    # the old DRCS gave her 1,023 of the 1,024 cookies and bob DRC_ENOSPC
    assert len(carol["got"]) == SHARE
    assert len(carol["refused"]) == 51
    assert all(r.startswith("DRC_ENOSPC: user-default limit of 102") for r in carol["refused"])
    assert "drc.conf [server] user_limit" in carol["refused"][0]
    assert pool_free(cluster) == (POOL - SHARE, POOL)
    # bob still gets credentials, through his node's DRCC and straight on DRCS's bus
    r = cluster.outside_job("bob", "print(client.acquire(0))")
    assert r.returncode == 0, r.stderr
    assert cluster.drccli("bob", "acquire").returncode == 0
    # one audit line for carol reaching her limit, though she was refused 51 times
    (line,) = audit_lines(cluster, "limit-reached")
    assert f"scope=user-default uid={users['carol'].uid}" in line and "refused_before=0" in line


def test_the_admin_sees_carol_s_pins_and_expires_them(cluster: Cluster, users) -> None:
    got = flood(cluster, "carol")["got"]
    pins = json.loads(cluster.drccli(None, "pins", "--json", "-u", "carol", check=True).stdout)
    uid = users["carol"].uid
    assert pins == [
        {"uid": uid, "credential": c, "owner": uid, "state": "ACTIVE"} for c in sorted(got)
    ]
    # carol may neither list pins nor drop them
    for argv in (("pins",), ("unpin", "carol")):
        r = cluster.drccli("carol", *argv)
        assert r.returncode == 1 and "DRC_EPERM" in r.stderr, r.stderr
    out = cluster.drccli(None, "unpin", "carol", check=True).stdout
    assert out.startswith(f"dropped every pin of uid {uid}; freed credential(s): ")
    assert sorted(map(int, out.split(":")[-1].split())) == sorted(got)
    assert pool_free(cluster) == (POOL, POOL)
    assert cluster.drccli(None, "pins", check=True).stdout.strip() == "No pins."
    (line,) = audit_lines(cluster, "expire-pins")
    assert f"expire-pins uid={uid}" in line and "by uid=0" in line
    # her share is hers again
    assert len(flood(cluster, "carol")["got"]) == SHARE


def pin_as_carol(cluster: Cluster, credential: int):
    """carol's Access straight on DRCS's bus: a pin of her uid, no process behind it."""
    return cluster.python(
        "carol", f"from drc.serverclient import ServerProxy; ServerProxy().access({credential})"
    )


def test_carol_s_pins_on_alice_s_credentials_count_against_carol(cluster: Cluster, users) -> None:
    uid = users["carol"].uid
    cluster.drccli(None, "limit", "-u", "carol", "1", check=True)
    first, second = (int(cluster.drccli("alice", "acquire", check=True).stdout) for _ in "12")
    for cred in (first, second):
        cluster.drccli("alice", "grant", str(cred), "-u", "carol", check=True)
    assert pin_as_carol(cluster, first).returncode == 0
    cluster.drccli("alice", "release", str(first), check=True)  # alive: carol's pin holds it
    # her one credential's worth is taken by the pin: no acquire, and no second pin
    refused = cluster.drccli("carol", "acquire")
    assert refused.returncode == 1, refused.stdout
    assert f"DRC_ENOSPC: uid {uid} limit of 1 live credential(s) reached" in refused.stderr
    assert "owned or pinned" in refused.stderr
    pinned = pin_as_carol(cluster, second)
    assert pinned.returncode == 1 and "DRC_ENOSPC" in pinned.stderr, pinned.stderr
    assert [p["uid"] for p in listing_holders(cluster, second)] == [users["alice"].uid]
    # her pin dropped by the admin: alice's released credential goes, carol may acquire again
    cluster.drccli(None, "unpin", "carol", check=True)
    assert all(c["credential"] != first for c in cluster.server().list())
    assert cluster.drccli("carol", "acquire").returncode == 0


def listing_holders(cluster: Cluster, credential: int) -> list[dict]:
    """The pins among the credential's holders, as ``drccli list -c`` shows them."""
    out = cluster.drccli(None, "list", "--json", "-c", str(credential), check=True).stdout
    (one,) = json.loads(out)
    return [h for h in one["holders"] if h["kind"] == "pin"]
