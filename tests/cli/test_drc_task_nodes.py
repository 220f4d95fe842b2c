"""``drc`` across two nodes (each its own bus and DRCC, two DRCS on one PostgreSQL, MUNGE
link): job A on node 1 shares a credential, bob's job B on node 2 reaches it by id and by
token, and each node's DRCC names itself and its caller."""

from __future__ import annotations

import json

from multinode import MultiNode

from drc.embedded.polling import wait_for


def ok(done) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return done.stdout


def test_a_job_on_another_node_reaches_the_shared_credential(two_nodes: MultiNode) -> None:
    c = two_nodes
    cred = ok(c.drc(1, 7, "alice", "acquire", "--flex")).strip()
    ok(c.drc(1, 7, "alice", "grant", cred, "--uid", "bob"))
    token = ok(c.drc(1, 7, "alice", "token", cred)).strip()
    key_a = ok(c.drc(1, 7, "alice", "access", cred, "--auth-key"))

    me = json.loads(ok(c.drc(2, 8, "bob", "whoami", "--json")))
    assert (me["node"], me["job"]) == ("node2", 8)
    assert ok(c.drc(2, 8, "bob", "access", cred, "--auth-key")) == key_a
    by_token = json.loads(ok(c.drc(2, 9, "bob", "access", "--token", token, "--json")))
    assert by_token["credential"] == int(cred) and f"{by_token['cookie1']}\n" == key_a
    # Carol's job on node 2 is refused by DRCS, through node 2's DRCC.
    refused = c.drc(2, 10, "carol", "access", cred)
    assert refused.returncode == 1 and refused.stderr.startswith("drc: DRC_EPERM: ")
    # Job 9's token reference reaches DRCS in the background (DRCC batches them).
    expected = {("node1", 7), ("node2", 8), ("node2", 9)}

    def held() -> set[tuple[str, int]]:
        return {(h["node"], h["job"]) for h in c.server(1).show(int(cred))["holders"]}

    wait_for(lambda: held() == expected, 10, what="the three jobs' references at DRCS")
