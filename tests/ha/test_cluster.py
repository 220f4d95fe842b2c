"""drc as a cluster: several nodes, two DRCS on one PostgreSQL, fail-over with nothing lost
or doubled. Real dbus-daemons, munged, PostgreSQL, TCP+MUNGE link, users alice and bob."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from multinode import MultiNode, last_json
from store_consistency import consistency_problems

from drc.address import split_host_port
from drc.core.errors import Code, DrcError
from drc.core.model import Flags, LimitScope
from drc.embedded.polling import wait_for
from drc.jedi.main import reconcile
from drc.link import LinkClient, Munge
from drc.serverclient import ServerProxy

from cluster import User
from scale import size

ALICE_JOB, BOB_JOB = 100, 200


def test_a_four_node_job_shares_a_credential_with_a_two_node_job_of_another_user(
    four_nodes: MultiNode, users: dict[str, User]
):
    """One DRCS request per (job, node): the second task of a job on a node is answered by
    that node's DRCC alone. A FLEX credential serves both jobs on a node; a non-FLEX one only
    one job per node. Each node's job end drops that node's references only."""
    c = four_nodes
    flex, plain = map(
        int,
        c.task(
            1,
            ALICE_JOB,
            "alice",
            "f = client.acquire(client.FLEX); p = client.acquire(0)\n"
            f"client.grant(f, wlm={BOB_JOB}); client.grant(p, wlm={BOB_JOB})\n"
            "print(f, p)",
        ).split(),
    )
    access = f"print(client.access({flex}).cookie1)"
    for node in (1, 2, 3, 4):
        for _ in range(2):  # two tasks of the job on the node
            c.task(node, ALICE_JOB, "alice", access)
    for node in (1, 2):
        for _ in range(2):
            c.task(node, BOB_JOB, "bob", access)
    for node in (1, 2, 3, 4):
        counters = c.counters(node)
        jobs_here = 2 if node in (1, 2) else 1
        acquired_here = 1 if node == 1 else 0  # the acquire cached alice's association
        assert counters["access_forwarded"] == jobs_here - acquired_here, (node, counters)
        assert counters["access_local"] == 2 * jobs_here - (jobs_here - acquired_here)

    # non-FLEX: bob's job may not share node 1 with alice's job; node 3 is free of bob ...
    refused = c.run(c.task_argv(1, BOB_JOB, "bob", f"client.access({plain})"))
    assert refused.returncode != 0 and "not FLEX" in refused.stderr
    c.task(3, BOB_JOB, "bob", f"client.access({plain})")  # ... alice's job never used it there

    shown = c.server(2).show(flex)
    assert shown["refs"] == 4 + 2  # (alice's job, 4 nodes) + (bob's job, 2 nodes)
    for node in (1, 2, 3):
        c.end_job(node, ALICE_JOB)
    assert c.server(1).show(flex)["refs"] == 1 + 2  # node4's part of alice's job still holds
    c.end_job(4, ALICE_JOB)
    c.end_job(1, BOB_JOB)
    assert c.server(2).show(flex)["refs"] == 1
    assert "freed credential(s): " + str(flex) in c.end_job(2, BOB_JOB)
    assert flex not in {cred["credential"] for cred in c.server(1).list()}


def test_limits_hold_with_acquires_racing_on_two_servers(two_nodes: MultiNode):
    """Acquires spread over both DRCS never exceed a limit: exactly the limit succeed."""
    c = two_nodes
    limit, races = size(40, 200), size(240, 1200)
    c.server(1).call("SetLimit", "sut", LimitScope.UID.value, 1000, limit)
    assert c.emb.munged is not None
    munge = Munge(c.emb.munged.socket)

    async def race() -> list[object]:
        clients = []
        for address in c.emb.servers:
            host, port = split_host_port(address, "server")
            clients.append(LinkClient(host, port, munge=munge, server_uid=0, timeout=30))
        caller = {"uid": 1000, "gid": 1000, "gids": [], "pid": 0, "job": 7, "node": "n1"}

        async def one(i: int) -> object:
            try:
                return (await clients[i % 2].call("NodeAcquire", [caller, 0]))[0]["credential"]
            except DrcError as e:
                return e.code

        try:
            return await asyncio.gather(*(one(i) for i in range(races)))
        finally:
            for client in clients:
                await client.close()

    results = asyncio.run(race())
    granted = [r for r in results if isinstance(r, int) and not isinstance(r, Code)]
    refused = [r for r in results if isinstance(r, Code)]
    assert len(granted) == limit and len(set(granted)) == limit
    assert set(refused) == {Code.ENOSPC} and len(refused) == races - limit
    store = c.store()
    try:
        assert consistency_problems(store) == []
        with store.snapshot() as tx:
            assert len(tx.list_credentials()) == limit
    finally:
        store.close()


LOAD = """
import json, time
client.set_timeout(30)
kept, released, errors, lat = [], [], [], []
deadline = time.monotonic() + {seconds}
i = 0
while time.monotonic() < deadline:
    t = time.monotonic()
    try:
        c = client.acquire(client.FLEX)
        if i % 2:
            client.release(c)
            released.append(c)
        else:
            kept.append(c)
        client.access({cached})  # a cached association: answered by DRCC alone
    except Exception as e:
        errors.append(repr(e))
    lat.append(time.monotonic() - t)
    i += 1
print(json.dumps({{"kept": kept, "released": released, "errors": errors, "max": max(lat)}}))
"""


def test_sigkill_of_the_followed_drcs_mid_stream_loses_and_doubles_nothing(
    two_nodes: MultiNode,
):
    """Nodes 1 and 2 stream acquire/release; DRCS 1 (followed by node 1) is SIGKILLed
    mid-stream. Clients see a bounded pause and no error; every acknowledged credential is
    there, no credential was created twice, the pool count is exact."""
    c = two_nodes
    seconds = size(4, 12)
    # a load test, not a fairness test: alice keeps more than drc.conf's 10% user share
    c.server(1).set_limit("user-default", 0, 100_000)
    seeds = {
        node: int(c.task(node, 300 + node, "alice", "print(client.acquire(0))")) for node in (1, 2)
    }
    tasks = {
        node: c.spawn_task(
            node, 300 + node, "alice", LOAD.format(seconds=seconds, cached=seeds[node])
        )
        for node in (1, 2)
    }
    time.sleep(seconds / 3)
    c.kill_server(1)
    results = {}
    for node, proc in tasks.items():
        out, err = proc.communicate(timeout=seconds + 60)
        assert proc.returncode == 0, err
        results[node] = last_json(out)
    kept = {cred for r in results.values() for cred in r["kept"]} | set(seeds.values())
    released = {cred for r in results.values() for cred in r["released"]}
    for node, r in results.items():
        assert r["errors"] == [], (node, r["errors"])
        assert r["max"] < 5.0, f"node {node} paused {r['max']:.2f} s"
        assert len(r["kept"]) + len(r["released"]) > 5  # the stream was busy
    assert sum(len(r["kept"]) for r in results.values()) > 0
    live = {cred["credential"] for cred in c.server(2).list()}
    assert live == kept  # nothing acknowledged lost, nothing created twice or leaked
    assert not live & released
    store = c.store()
    try:
        assert consistency_problems(store) == []
        with store.snapshot() as tx:
            assert tx.slots_in_use("pool") == len(kept)
            following = dict((n, s) for n, s, _ in tx.node_servers())
        assert following["node1"] == c.emb.servers[1]  # node 1 moved to DRCS 2
    finally:
        store.close()


WATCH_TOKEN = """
import sys, time
token = sys.stdin.readline().strip()
client.access_with_token(token)
print("ok", flush=True)
sys.stdin.readline()  # the test revoked
start = time.monotonic()
while time.monotonic() - start < 5:
    try:
        client.access_with_token(token)
    except client.DrcError as e:
        print("refused", round(time.monotonic() - start, 3), e.code.name, flush=True)
        break
    time.sleep(0.01)
else:
    print("still accepted after 5 s")
"""


@pytest.mark.parametrize("fail_over", [False, True], ids=["followed", "after-fail-over"])
def test_a_revoke_on_one_server_kills_a_token_on_a_node_following_the_other(
    two_nodes: MultiNode, users: dict[str, User], fail_over: bool
):
    """Within 1 s; also when the token's node has just lost its DRCS (SIGKILL) and must
    resynchronise on the other one: no revocation is missed."""
    c = two_nodes
    cred, token = c.task(
        1,
        ALICE_JOB,
        "alice",
        f"c = client.acquire(0); client.grant(c, uid={users['bob'].uid})\n"
        "print(c, client.get_credential_token(c))",
    ).split()
    watcher = c.spawn_task(2, BOB_JOB, "bob", WATCH_TOKEN)
    try:
        assert watcher.stdin is not None and watcher.stdout is not None
        watcher.stdin.write(token + "\n")
        watcher.stdin.flush()
        assert watcher.stdout.readline().strip() == "ok"
        if fail_over:
            c.kill_server(2)  # node2's DRCS
        c.task(1, ALICE_JOB, "alice", f"client.revoke({cred}, uid={users['bob'].uid})")
        watcher.stdin.write("revoked\n")
        watcher.stdin.flush()
        out, err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    words = out.split()
    assert words[:1] == ["refused"], out + err
    assert float(words[1]) < 1.0 and words[2] == "BAD_TOKEN"


class ActiveJobs:
    """The workload manager's answer to drc-jedi: which jobs still run."""

    def __init__(self, jobs: set[int]) -> None:
        self.jobs = jobs

    def active_jobs(self) -> set[int]:
        return self.jobs


def test_both_servers_killed_and_restarted_then_reconcile_expires_jobs_ended_meanwhile(
    two_nodes: MultiNode,
):
    c = two_nodes
    ended = int(c.task(1, ALICE_JOB, "alice", "print(client.acquire(0))"))
    running = int(c.task(2, BOB_JOB, "bob", "print(client.acquire(0))"))
    c.kill_server(1)
    c.kill_server(2)
    # alice's job ends while no DRCS runs: its epilog's report cannot arrive
    failed = c.run(c.embedded("end-job", "--node", "1", str(ALICE_JOB)))
    assert failed.returncode != 0 and "ECONNREFUSED" in failed.stderr
    c.restart_server(2)
    c.restart_server(1)
    store = c.store()
    try:
        assert consistency_problems(store) == []
    finally:
        store.close()
    with_server2 = ServerProxy(c.server_bus(2))
    try:  # drc-jedi on the second DRCS host
        result = reconcile(c.config(2), wlm=ActiveJobs({BOB_JOB}), server=with_server2)
    finally:
        with_server2.close()
    assert result.expired == [ALICE_JOB] and result.freed == [ended]
    assert {cred["credential"] for cred in c.server(1).list()} == {running}


def test_a_request_id_is_exactly_once_and_never_reused_for_another_request(
    two_nodes: MultiNode,
):
    c = two_nodes
    caller = {"uid": 1000, "gid": 1000, "gids": [], "pid": 0, "job": 9, "node": "n1"}
    with c.link(1) as one, c.link(2) as two:
        first = one.call("NodeAcquire", [caller, 0], rid="n1-test-1")[0]
        again = two.call("NodeAcquire", [caller, 0], rid="n1-test-1")[0]  # after a fail-over
        assert again["credential"] == first["credential"]
        assert again["cookie1"] == first["cookie1"]
        with pytest.raises(DrcError) as e:
            two.call("NodeAcquire", [caller, 1], rid="n1-test-1")
        assert e.value.code is Code.EINVAL and "already used" in e.value.message
        with pytest.raises(DrcError) as e:
            one.call("NodeJobsEnded", ["n1", [9]], rid="n1-test-1")
        assert e.value.code is Code.EINVAL
        assert two.call("NodeJobsEnded", ["n1", [9]], rid="n1-test-2") == [[first["credential"]]]
        assert one.call("NodeJobsEnded", ["n1", [9]], rid="n1-test-2") == [[]]  # idempotent
    store = c.store()
    try:
        with store.snapshot() as tx:
            assert tx.list_credentials() == []
        assert consistency_problems(store) == []
    finally:
        store.close()


def test_a_retried_access_answers_as_its_first_run_and_records_nothing(two_nodes: MultiNode):
    """NodeAccess is not exactly-once: the caller's reference is its record. Attack the
    retry as a fail-over makes it: the first run committed but its answer was lost, the
    grant was revoked meanwhile, and the retry lands on the other DRCS with the same request
    id (as a node daemon that predates this sends one). It must answer the credential (the
    holder holds a reference), add no second reference, and leave no request record; a
    holder that never got in is still refused."""
    c = two_nodes
    owner = {"uid": 1000, "gid": 1000, "gids": [], "pid": 0, "job": 9, "node": "n1"}
    guest = {"uid": 1001, "gid": 1001, "gids": [], "pid": 0, "job": 12, "node": "n2"}
    stranger = {**guest, "uid": 1002, "gid": 1002, "job": 13}
    with c.link(1) as one, c.link(2) as two:
        cred = one.call("NodeAcquire", [owner, int(Flags.FLEX_CREDENTIAL)], rid="t-acq")[0]
        credential = cred["credential"]
        one.call("NodeGrant", [owner, credential, 1001, int(Flags.TARGET_UID)], rid="t-grant")
        first = one.call("NodeAccess", [guest, credential], rid="t-access")[0]  # "lost"
        one.call("NodeRevoke", [owner, credential, 1001, int(Flags.TARGET_UID)], rid="t-rev")
        again = two.call("NodeAccess", [guest, credential], rid="t-access")[0]
        assert (again["credential"], again["cookie1"]) == (credential, first["cookie1"])
        with pytest.raises(DrcError) as refused:
            two.call("NodeAccess", [stranger, credential])
        assert refused.value.code is Code.EPERM
    store = c.store()
    try:
        with store.snapshot() as tx:
            rows = tx.db.execute_sql('SELECT "rid" FROM "link_request"')
            rids = [r[0] for r in rows if r[0].startswith("t-")]  # not the nodes' own
            held = tx.reference_counts([credential])[credential][0]
        assert sorted(rids) == ["t-acq", "t-grant", "t-rev"]  # the accesses recorded nothing
        assert held == 2  # the owner's and the guest's one reference
        assert consistency_problems(store) == []
    finally:
        store.close()


def test_a_drcs_that_loses_postgresql_refuses_and_recovers(
    two_nodes: MultiNode, postgresql_server: str
):
    import psycopg

    c = two_nodes
    name = c.database.rsplit("/", 1)[1]
    caller = {"uid": 1000, "gid": 1000, "gids": [], "pid": 0, "job": 9, "node": "n1"}
    admin = psycopg.connect(f"{postgresql_server}/postgres", autocommit=True)
    with admin, c.link(1) as link:
        kept = link.call("NodeAcquire", [caller, 0], rid="pg-1")[0]["credential"]
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        try:
            for rid in ("pg-2", "pg-3"):
                with pytest.raises(DrcError) as e:
                    link.call("NodeAcquire", [caller, 0], rid=rid)
                assert e.value.code is Code.ECONNREFUSED, e.value
                assert "PostgreSQL" in e.value.message
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        back = link.call("NodeAcquire", [caller, 0], rid="pg-2")[0]["credential"]
    assert back != kept
    store = c.store()
    try:
        with store.snapshot() as tx:
            assert {x.id for x in tx.list_credentials()} == {kept, back}  # nothing half-made
        assert consistency_problems(store) == []
    finally:
        store.close()


def test_a_second_drcs_on_a_sqlite_store_refuses_to_start(cluster):
    done = cluster.run_as(
        None, ["/usr/bin/python3", "-m", "drc.server.main", "-c", str(cluster.emb.config)]
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "another DRCS" in lines[0] and "PostgreSQL" in lines[0], lines


def test_drccli_status_lists_every_drcs_and_which_one_each_node_follows(two_nodes: MultiNode):
    c = two_nodes
    one, two = c.emb.servers

    def following() -> dict[str, str]:
        status = c.server(1).call("Status", "")[0]
        return {entry["node"]: entry["server"] for entry in status["nodes_following"]}

    assert following() == {"node1": one, "node2": two}
    c.kill_server(2, signal.SIGKILL)
    # node2's change feed notices at once and moves to DRCS 1
    wait_for(lambda: following()["node2"] == one, 10, what="node2 to follow DRCS 1", interval=0.1)
    assert following() == {"node1": one, "node2": one}
    out = c.run([str(c.runtime.bin / "drccli"), "status"], timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{c.emb.servers[0]}  reachable" in out.stdout, out.stdout
    assert f"{c.emb.servers[1]}  UNREACHABLE" in out.stdout, out.stdout


def test_drccli_status_counts_the_nodes_of_every_drcs_not_only_its_own(three_nodes: MultiNode):
    """Three nodes on two DRCS: asked on DRCS 2 (one follower), status says 3 connected and
    how many follow this one, not "1 connected"; JSON has every server's count."""
    c = three_nodes

    def counts() -> list[int]:
        return [e.get("nodes_connected") for e in c.server(2).servers()]

    wait_for(lambda: sorted(counts()) == [1, 2], 10, what="nodes 1..3 following", interval=0.1)
    drccli = [str(c.runtime.bin / "drccli"), "--bus", c.server_bus(2), "status"]
    out = c.run(drccli, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Nodes:       3 connected to 2 of 2 DRCS (1 following this one), 3 known" in out.stdout
    shown = json.loads(c.run([*drccli, "--json"], timeout=60).stdout)
    assert sorted(e["nodes_connected"] for e in shown["servers"]) == [1, 2]


def test_a_node_whose_drcs_stops_answering_moves_on_within_the_client_timeout(
    two_nodes: MultiNode,
):
    """DRCS 1 hangs (SIGSTOP: its sockets stay open, nothing answers): node 1's next call
    waits at most half its timeout there, then DRCS 2 answers; cached accesses never wait."""
    c = two_nodes
    cached = int(c.task(1, ALICE_JOB, "alice", "print(client.acquire(0))"))
    c.kill_server(1, signal.SIGSTOP)
    try:
        code = (
            "import time\n"
            f"t = time.monotonic(); client.access({cached}); cached = time.monotonic() - t\n"
            "t = time.monotonic(); c = client.acquire(0); took = time.monotonic() - t\n"
            "print(c, round(cached, 3), round(took, 3))"
        )
        cred, cached_s, took = c.task(1, ALICE_JOB, "alice", code).split()
    finally:
        c.kill_server(1, signal.SIGCONT)
    assert float(cached_s) < 0.5  # answered by DRCC alone
    assert 2.0 <= float(took) < 5.0  # [link] timeout 5 s: 2.5 s on the silent one, then DRCS 2
    assert int(cred) in {x["credential"] for x in c.server(2).list()}


def test_a_step_on_a_node_its_batch_step_never_ran_on_finds_the_jobs_credential(
    two_nodes: MultiNode, users: dict[str, User]
):
    """JobCredential (what a multi-node ``srun --drc=acquire`` step asks) answers the same id on
    every node: node 1's DRCC from its cache, node 2's (following the other DRCS) from DRCS."""
    c = two_nodes
    job_credential = "print(client._node.job_credential())"
    assert c.task(2, ALICE_JOB, "alice", job_credential).strip() == "0", "holds none yet"
    cred = int(c.task(1, ALICE_JOB, "alice", "print(client.acquire(0))"))  # the batch step
    assert int(c.task(1, ALICE_JOB, "alice", job_credential)) == cred
    assert int(c.task(2, ALICE_JOB, "alice", job_credential)) == cred
    assert c.counters(2)["job_credential_forwarded"] == 2
    assert int(c.task(2, ALICE_JOB, "alice", f"print(client.access({cred}).credential)")) == cred
    assert int(c.task(2, ALICE_JOB, "alice", job_credential)) == cred  # now from node 2's cache
    assert c.counters(2)["job_credential_local"] == 1
    assert c.task(2, BOB_JOB, "bob", job_credential).strip() == "0", "another job's is not its"
    assert c.server(1).show(cred)["refs"] == 2  # asking took no reference


def test_the_new_link_verbs_refuse_bad_input_and_change_nothing(two_nodes: MultiNode):
    c = two_nodes
    with c.link(2) as link:
        for method, args in (
            ("NodeFollow", ["node1", 7]),
            ("NodeFollow", ["node1", ""]),
            ("NodeFollow", ["", "127.0.0.2:1"]),
            ("NodeJobsEndedHere", ["node1", ["x"]]),
            ("NodeJobsEndedHere", [7, [1]]),
            ("ServerInfo", [1]),
            ("NodeJobCredential", [{"uid": 1000, "gid": 1000, "node": "node1"}]),
            ("NodeJobCredential", [{"uid": 1000, "gid": 1000, "job": -1, "node": "node1"}]),
            ("NodeJobCredential", [{"uid": 1000, "gid": 1000, "job": 5, "node": ""}]),
            ("NodeJobCredential", ["job 5"]),
            ("NodeJobCredential", []),
        ):
            with pytest.raises(DrcError) as e:
                link.call(method, args)
            assert e.value.code is Code.EINVAL, (method, args, e.value)
        assert link.call("ServerInfo", [])[0]["server"] == c.emb.servers[1]
    status = c.server(1).call("Status", "")[0]
    assert {e["node"]: e["server"] for e in status["nodes_following"]} == {
        "node1": c.emb.servers[0],
        "node2": c.emb.servers[1],
    }
