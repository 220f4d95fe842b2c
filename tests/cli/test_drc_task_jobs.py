"""``drc``, the job scripts' command, through real daemons: alice's and bob's jobs share a
credential the way the README shows (acquire, grant, access --auth-key / --env), a refused
access, DRCC stopped, and identity taken from the kernel, never from arguments or environment.

Every task runs through ``drc-embedded run`` (a root-made task registration, as the SPANK
plugin makes one), as a real user, against the embedded DRCS and DRCC."""

from __future__ import annotations

import json
import pwd
import subprocess

import pytest

from drc.embedded.processes import terminate

from cluster import Cluster, User

ALICE_JOB, BOB_JOB, CAROL_JOB = 101, 202, 303


def users_uid(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    assert done.stderr == ""
    return done.stdout


def holders(cluster: Cluster, cred: int) -> set[tuple[str, int]]:
    """(kind, job) of every reference DRCS holds for ``cred``."""
    return {(h["kind"], h.get("job", 0)) for h in live(cluster, cred)["holders"]}


def live(cluster: Cluster, cred: int | None = None):
    """DRCS's view (drccli's): one credential, or the ids of every live one."""
    server = cluster.server()
    try:
        return server.show(cred) if cred else [c["credential"] for c in server.list()]
    finally:
        server.close()


@pytest.fixture
def shared(cluster: Cluster, users: dict[str, User]) -> int:
    """Job A (alice) acquired a FLEX credential and granted it to bob, as in the README."""
    cred = int(ok(cluster.drc(ALICE_JOB, "alice", "acquire", "--flex")))
    assert ok(cluster.drc(ALICE_JOB, "alice", "grant", str(cred), "--uid", "bob")) == ""
    return cred


def test_two_jobs_share_a_credential_by_its_auth_key(cluster: Cluster, shared: int) -> None:
    """Job A writes its server's config with --auth-key; bob's job B gets the same key."""
    key_a = ok(cluster.drc(ALICE_JOB, "alice", "access", str(shared), "--auth-key"))
    key_b = ok(cluster.drc(BOB_JOB, "bob", "access", str(shared), "--auth-key"))
    info = json.loads(ok(cluster.drc(BOB_JOB, "bob", "access", str(shared), "--json")))
    assert key_a == key_b == f"{info['cookie1']}\n"
    assert info["credential"] == shared and info["cookie1"] > 0
    # Each reference belongs to its job (not to the exited drc processes, nor to the uid).
    assert holders(cluster, shared) == {("job", ALICE_JOB), ("job", BOB_JOB)}
    cluster.end_job(BOB_JOB)
    cluster.end_job(ALICE_JOB)
    assert live(cluster) == []  # both jobs over: the credential went back to the pool


def test_env_output_evaluated_by_a_shell_sets_the_credential(cluster: Cluster, shared) -> None:
    script = (
        f'eval "$(drc access {shared} --env)" || exit 9; '
        'echo "$DRC_CREDENTIAL $DRC_COOKIE1 $DRC_COOKIE2"'
    )
    out = ok(cluster.task(BOB_JOB, "bob", ["/bin/sh", "-c", script]))
    info = json.loads(ok(cluster.drc(BOB_JOB, "bob", "access", str(shared), "--json")))
    assert out == f"{shared} {info['cookie1']} {info['cookie2']}\n"


def test_a_token_reaches_the_granted_job(cluster: Cluster, shared: int) -> None:
    token = ok(cluster.drc(ALICE_JOB, "alice", "token", str(shared))).strip()
    by_token = json.loads(ok(cluster.drc(BOB_JOB, "bob", "access", "--token", token, "--json")))
    by_id = json.loads(ok(cluster.drc(ALICE_JOB, "alice", "access", str(shared), "--json")))
    assert by_token == by_id
    refused = cluster.drc(CAROL_JOB, "carol", "access", "--token", token)
    assert refused.returncode == 1 and refused.stderr.startswith("drc: DRC_EPERM: ")


def test_a_refused_access_exits_1_with_the_reason_and_changes_nothing(
    cluster: Cluster, shared: int
) -> None:
    before = holders(cluster, shared)
    done = cluster.drc(CAROL_JOB, "carol", "access", str(shared), "--auth-key")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("drc: DRC_EPERM: ")
    assert "uid" in done.stderr and str(shared) in done.stderr
    assert holders(cluster, shared) == before
    done = cluster.drc(CAROL_JOB, "carol", "grant", str(shared), "--uid", "carol")
    assert done.returncode == 1 and done.stderr.startswith("drc: DRC_EPERM: ")


def test_a_tasks_child_is_its_job_whatever_its_environment_says(
    cluster: Cluster, users: dict[str, User]
) -> None:
    """Identity from the kernel: a grandchild of the registered task is in the task's job,
    and SLURM_JOB_ID (set by the user) names nothing."""
    cred = int(ok(cluster.drc(ALICE_JOB, "alice", "acquire")))
    ok(cluster.drc(ALICE_JOB, "alice", "grant", str(cred), "--job", str(ALICE_JOB)))
    child = ["/bin/sh", "-c", "/bin/sh -c 'drc whoami --json'"]
    me = json.loads(ok(cluster.task(BOB_JOB, "bob", child, extra_env={"SLURM_JOB_ID": "101"})))
    assert (me["uid"], me["gid"], me["job"]) == (users["bob"].uid, users["bob"].gid, BOB_JOB)
    assert me["fabric"] == "cookie"
    plain = ok(cluster.drc(BOB_JOB, "bob", "whoami")).splitlines()
    assert [line.split(" ", 1)[0] for line in plain] == [
        "node",
        "uid",
        "gid",
        "job",
        "pid",
        "fabric",
    ]
    assert f"job {BOB_JOB}" in plain and f"uid {users['bob'].uid}" in plain
    # Bob claims alice's job through the environment: refused, for his real job.
    forged = cluster.drc(BOB_JOB, "bob", "access", str(cred), extra_env={"SLURM_JOB_ID": "101"})
    assert forged.returncode == 1 and forged.stderr.startswith("drc: DRC_EPERM: ")
    assert "job 202" in forged.stderr
    # Outside any job, the environment does not put bob in one either.
    outside = cluster.drc(None, "bob", "whoami", "--json", extra_env={"SLURM_JOB_ID": "101"})
    assert json.loads(ok(outside))["job"] == 0


def test_outside_a_job_acquire_and_access_refuse_and_take_nothing(
    cluster: Cluster, shared: int
) -> None:
    """Their reference would belong to the drc process, gone when it exits: exit 2."""
    before = holders(cluster, shared)
    for args in (("acquire", "--flex"), ("access", str(shared), "--auth-key")):
        done = cluster.drc(None, "bob", *args)
        assert done.returncode == 2, done.stderr
        assert done.stdout == ""
        assert "sees no job for this process" in done.stderr
    assert holders(cluster, shared) == before
    assert live(cluster) == [shared]
    # A PERSISTENT credential outlives its acquirer anyway (root may create one).
    kept = int(ok(cluster.drc(None, "root", "acquire", "--persistent")))
    assert live(cluster) == [shared, kept]
    assert ("pin", 0) in holders(cluster, kept)


def test_revoke_stops_new_access_and_keeps_references(cluster: Cluster, shared: int) -> None:
    ok(cluster.drc(BOB_JOB, "bob", "access", str(shared)))
    revoked = ok(cluster.drc(ALICE_JOB, "alice", "revoke", str(shared), "-u", "bob", "--json"))
    assert json.loads(revoked) == {"credential": shared, "revoked": {"uid": users_uid("bob")}}
    again = cluster.drc(404, "bob", "access", str(shared))
    assert again.returncode == 1 and again.stderr.startswith("drc: DRC_EPERM: ")
    assert holders(cluster, shared) == {("job", ALICE_JOB), ("job", BOB_JOB)}


def test_usage_errors_exit_2(cluster: Cluster, shared: int) -> None:
    for args, says in (
        (("grant", str(shared), "--uid", "no-such-user-x"), "no such user"),
        (("access",), "give a credential ID or --token"),
        (("access", str(shared), "--device", "1"), "--device N goes with --auth-key"),
        (("access", str(shared), "--env", "--json"), "not allowed with"),
    ):
        done = cluster.drc(ALICE_JOB, "alice", *args)
        assert (done.returncode, done.stdout) == (2, ""), args
        assert says in done.stderr, done.stderr


def test_release_drops_the_jobs_reference(cluster: Cluster, shared: int) -> None:
    ok(cluster.drc(BOB_JOB, "bob", "access", str(shared)))
    assert json.loads(ok(cluster.drc(BOB_JOB, "bob", "release", str(shared), "--json"))) == {
        "credential": shared,
        "freed": False,
    }
    assert holders(cluster, shared) == {("job", ALICE_JOB)}
    assert ok(cluster.drc(ALICE_JOB, "alice", "release", str(shared))) == ""
    assert live(cluster) == []


def test_drcc_stopped_exits_3_naming_drcc_and_its_unit(cluster: Cluster, users) -> None:
    """The task is registered while DRCC runs; then DRCC stops and the task calls drc."""
    argv = cluster.task_argv(
        ALICE_JOB, "alice", ["/bin/sh", "-c", "echo ready; read go; drc whoami"]
    )
    task = cluster.spawn(argv)
    try:
        assert task.stdout is not None
        assert task.stdout.readline() == "ready\n"
        terminate(cluster.drcc_pid)
        out, err = task.communicate("go\n", timeout=30)
    finally:
        if task.poll() is None:
            task.kill()
            task.wait()
    assert task.returncode == 3, err
    assert out == ""
    assert err.startswith("drc: DRC_ECONNREFUSED: the DRC node daemon (drcc) is not running")
    assert "systemctl start drcc.service" in err
    # A task drc-embedded cannot register (DRCC down) does not run outside its job.
    unregistered = cluster.task(ALICE_JOB, "alice", ["/bin/sh", "-c", "echo ran"])
    assert (unregistered.returncode, unregistered.stdout) == (3, "")
    assert "drcc" in unregistered.stderr
