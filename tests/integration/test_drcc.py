"""DRCC on a real bus, reaching DRCS over the DRC link (TCP on 127.0.0.1, real munged)."""

from __future__ import annotations

import os
import signal
import subprocess
import tomllib
from pathlib import Path

from drc.embedded.polling import wait_for

from cluster import STAFF_GROUP, Cluster

GRANT_BOB = (
    "import pwd\ncred = client.acquire(client.FLEX)\n"
    "client.grant(cred, uid=pwd.getpwnam('bob').pw_uid)\nprint(cred)"
)
TRY_ACCESS = """
import sys
try:
    info = client.access({cred})
    print('ok', info.cookie1, client.get_wlm_id())
except client.DrcError as e:
    print('refused', e.name, client.get_wlm_id())
"""


def acquire_in_job(cluster: Cluster, job: int, user: str, code: str = GRANT_BOB) -> int:
    r = cluster.in_job(job, user, code)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def acquire_for_jobs(cluster: Cluster, *jobs: int, flex: bool = True) -> int:
    """alice, in job 101, acquires a credential and grants it to ``jobs``."""
    grants = "".join(f"client.grant(cred, wlm={j})\n" for j in jobs)
    flags = "client.FLEX" if flex else "0"
    return acquire_in_job(
        cluster, 101, "alice", f"cred = client.acquire({flags})\n{grants}print(cred)"
    )


def try_access(cluster: Cluster, job: int | None, user: str, cred: int, **kw) -> list[str]:
    code = TRY_ACCESS.format(cred=cred)
    r = cluster.in_job(job, user, code, **kw) if job else cluster.outside_job(user, code, **kw)
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def refs(cluster: Cluster, cred: int) -> int | None:
    for c in cluster.server().list():
        if c["credential"] == cred:
            return c["refs"]
    return None


def test_cross_user_grant_through_drcc_and_carol_refused(cluster: Cluster, users):
    cred = acquire_in_job(cluster, 101, "alice")
    alice = try_access(cluster, 101, "alice", cred)
    bob = try_access(cluster, 202, "bob", cred)
    assert bob[0] == "ok" and bob[1] == alice[1] and bob[2] == "202"
    assert try_access(cluster, 303, "carol", cred)[:2] == ["refused", "DRC_EPERM"]
    assert refs(cluster, cred) == 2  # jobs 101 and 202


def test_cross_group_grant_through_drcc(cluster: Cluster, users):
    code = (
        f"cred = client.acquire(client.FLEX)\nimport grp\n"
        f"client.grant(cred, gid=grp.getgrnam('{STAFF_GROUP}').gr_gid)\nprint(cred)"
    )
    cred = acquire_in_job(cluster, 101, "alice", code)
    assert try_access(cluster, 202, "bob", cred)[0] == "ok"
    assert try_access(cluster, 303, "carol", cred)[0] == "refused"


def test_job_grant_reaches_that_job_only(cluster: Cluster, users):
    cred = acquire_for_jobs(cluster, 505)
    assert try_access(cluster, 505, "carol", cred)[0] == "ok"
    assert try_access(cluster, 506, "carol", cred)[0] == "refused"


def test_a_forged_slurm_job_id_gains_nothing(cluster: Cluster, users):
    cred = acquire_for_jobs(cluster, 101)
    forged = {"SLURM_JOB_ID": "101", "SLURM_JOBID": "101", "DRC_WLM_ID": "101"}
    outside = try_access(cluster, None, "carol", cred, extra_env=forged)
    assert outside == ["refused", "DRC_EPERM", "0"]
    inside_other = try_access(cluster, 303, "carol", cred, extra_env=forged)
    assert inside_other == ["refused", "DRC_EPERM", "303"]


def test_non_flex_credential_serves_one_job_per_node(cluster: Cluster, users):
    cred = acquire_for_jobs(cluster, 202, flex=False)
    assert try_access(cluster, 202, "bob", cred)[:2] == ["refused", "DRC_EPERM"]


def test_32_processes_of_one_job_make_one_drcs_request(cluster: Cluster, users):
    cred = acquire_for_jobs(cluster, 500)
    before = cluster.counters()
    code = f"print(client.access({cred}).cookie1)"
    argv = cluster.in_job_argv(500, "bob", code)
    procs = [
        subprocess.Popen(
            argv,
            env=cluster.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        for _ in range(32)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs if e][:1]
    cookies = {o.strip() for o, _ in outs}
    assert len(cookies) == 1
    after = cluster.counters()
    assert after["access_forwarded"] - before.get("access_forwarded", 0) == 1
    assert after["access_local"] - before.get("access_local", 0) == 31


TOKEN_OF = "import sys\nprint(client.get_credential_token(int(sys.argv[1])))"
WITH_TOKEN = """
import sys
try:
    print('ok', client.access_with_token(sys.argv[1]).cookie1)
except client.DrcError as e:
    print('refused', e.name)
"""


def token_for(cluster: Cluster, cred: int) -> str:
    r = cluster.in_job(101, "alice", TOKEN_OF.replace("sys.argv[1]", str(cred)))
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def with_token(cluster: Cluster, job: int, user: str, token: str) -> list[str]:
    r = cluster.in_job(job, user, WITH_TOKEN.replace("sys.argv[1]", repr(token)))
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_token_access_needs_no_drcs_round_trip(cluster: Cluster, users):
    cred = acquire_for_jobs(cluster, 404)
    token = token_for(cluster, cred)
    before = cluster.counters()
    os.kill(cluster.drcs_pid, signal.SIGSTOP)  # DRCS cannot answer anything now
    try:
        result = with_token(cluster, 404, "carol", token)
    finally:
        os.kill(cluster.drcs_pid, signal.SIGCONT)
    assert result[0] == "ok"
    after = cluster.counters()
    assert after["token_access_local"] - before.get("token_access_local", 0) == 1
    assert after.get("access_forwarded", 0) == before.get("access_forwarded", 0)
    # Reported to DRCS in the background, so expiring job 404 stays exact.
    assert wait_for(lambda: refs(cluster, cred) == 2)
    cluster.end_job(404)
    assert refs(cluster, cred) == 1


def test_tampered_and_foreign_tokens_are_bad_tokens(cluster: Cluster, users):
    cred = acquire_for_jobs(cluster, 404)
    token = token_for(cluster, cred)
    head, payload, mac = token.split(".")
    flipped = payload[:-3] + ("A" if payload[-3] != "A" else "B") + payload[-2:]
    for bad in (f"{head}.{flipped}.{mac}", token[:-5], token + "x", "drc1..", "garbage"):
        assert with_token(cluster, 404, "carol", bad) == ["refused", "DRC_BAD_TOKEN"]
    assert with_token(cluster, 405, "carol", token)[:2] == ["refused", "DRC_EPERM"]


def test_revoke_kills_old_tokens(cluster: Cluster, users):
    cred = acquire_for_jobs(cluster, 404, 405)
    token = token_for(cluster, cred)
    r = cluster.in_job(101, "alice", f"client.revoke({cred}, wlm=405)")
    assert r.returncode == 0, r.stderr
    # The revocation reaches DRCC on the change feed; the old token is refused, even for 404.
    assert wait_for(
        lambda: with_token(cluster, 404, "carol", token)[1] == "DRC_BAD_TOKEN", timeout=5
    )


def test_process_holder_outside_a_job_ends_with_the_process(cluster: Cluster, users):
    r = cluster.outside_job("alice", "print(client.acquire(client.FLEX))")
    cred = int(r.stdout)
    assert wait_for(lambda: refs(cluster, cred) is None), "freed when the process exited"


def test_drcc_killed_and_restarted_rechecks_its_process_holders(cluster: Cluster, users):
    keeper = subprocess.Popen(
        [
            "runuser",
            "-u",
            "alice",
            "--",
            "/usr/bin/python3",
            "-c",
            "from drc import client; import sys, time\n"
            "print(client.acquire(client.FLEX), flush=True); time.sleep(60)",
        ],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
        start_new_session=True,  # runuser forks: kill the whole group, python included
    )
    try:
        kept = int(keeper.stdout.readline())
        leaver = subprocess.Popen(
            [
                "runuser",
                "-u",
                "bob",
                "--",
                "/usr/bin/python3",
                "-c",
                "from drc import client; import sys\n"
                "print(client.acquire(client.FLEX), flush=True); sys.stdin.read()",
            ],
            env=cluster.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd="/",
        )
        left = int(leaver.stdout.readline())
        os.kill(cluster.drcc_pid, signal.SIGKILL)
        leaver.communicate("", timeout=30)  # exits while DRCC is down: nobody notices yet
        assert refs(cluster, left) == 1
        cluster.emb.start_node()
        assert wait_for(lambda: refs(cluster, left) is None)
        assert refs(cluster, kept) == 1  # alive: kept, and watched again
    finally:
        os.killpg(keeper.pid, signal.SIGKILL)
        keeper.wait()
    assert wait_for(lambda: refs(cluster, kept) is None)


def test_node_reboot_drops_the_nodes_references(cluster: Cluster, users):
    boot = Path(cluster.state_dir) / "boot_id"
    boot.write_text("boot-one\n")
    conf = cluster.emb.config
    conf.write_text(conf.read_text().replace("/proc/sys/kernel/random/boot_id", str(boot)))
    os.kill(cluster.drcc_pid, signal.SIGTERM)
    cluster.emb.start_node()
    cred = acquire_in_job(cluster, 101, "alice")
    pinned = int(cluster.drccli("alice", "acquire", check=True).stdout)
    os.kill(cluster.drcc_pid, signal.SIGKILL)
    boot.write_text("boot-two\n")  # the node "rebooted"
    cluster.emb.start_node()
    assert refs(cluster, cred) is None
    assert refs(cluster, pinned) == 1  # pins live on no node


def test_job_end_is_idempotent_and_frees_the_job(cluster: Cluster, users):
    cred = acquire_in_job(cluster, 101, "alice")
    first = cluster.end_job(101)
    second = cluster.end_job(101)
    assert str(cred) in first and "none" in second
    assert refs(cluster, cred) is None


def test_only_root_may_call_the_hooks(cluster: Cluster, users):
    code = (
        "from drc.bus import SyncBusClient\n"
        "b = SyncBusClient()\n"
        "try:\n"
        "    b.call('org.drc.Node', '/org/drc/Node', 'org.drc.Node', 'JobEnded', 'u', [7])\n"
        "except Exception as e:\n"
        "    print(e)\n"
    )
    assert "DRC_EPERM" in cluster.python("carol", code).stdout


#: Each request on a connection of its own: DRCS answers a uid that is not a node daemon's
#: EPERM and closes the connection (drc.link.server), so a second request on it could meet
#: the close instead of an answer, depending on which the client reads first.
LINK_AS_USER = """
from drc.link import Munge, SyncLinkClient
link = {link!r}  # drc.conf's [link], read by root: the file is root's only
host, port = link["server"].rsplit(":", 1)
job_101 = {{"uid": 1001, "gid": 1001, "job": 101, "node": "n1"}}
for method, args in (("NodeJobsEnded", ["n1", [101]]),
                     ("NodeHello", ["n1", "forged-boot"]),
                     ("NodeJobCredential", [job_101]),
                     ("SetLimit", ["global", 0, 0])):
    with SyncLinkClient(host, int(port), munge=Munge(link["munge_socket"]),
                        server_uid=link["server_uid"]) as client:
        try:
            client.call(method, args)
            print(method, "ACCEPTED")
        except Exception as e:
            print(method, getattr(e, "name", type(e).__name__))
"""


def test_a_user_with_its_own_munge_credential_can_do_nothing_a_node_may(cluster: Cluster, users):
    cred = acquire_in_job(cluster, 101, "alice")
    link = tomllib.loads(cluster.emb.config.read_text())["link"]
    r = cluster.python("carol", LINK_AS_USER.format(link=link))
    assert r.returncode == 0, r.stderr
    answers = dict(line.split() for line in r.stdout.splitlines())
    assert answers == {
        "NodeJobsEnded": "DRC_EPERM",
        "NodeHello": "DRC_EPERM",
        "NodeJobCredential": "DRC_EPERM",  # read-only, but it speaks for other users' jobs
        "SetLimit": "DRC_EPERM",
    }, answers
    assert refs(cluster, cred) == 1  # job 101 was not expired
