"""drc_client.c (written like the public DRC clients) against the embedded default — real
dbus-daemon, DRCS and DRCC — as alice, bob and carol."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from clib.support import VALGRIND, CLib, spawn_as

from drc.bus import SyncBusClient
from drc.core.errors import Code
from drc.embedded.polling import wait_for
from drc.embedded.processes import alive
from drc.refusals import BURST, RATE

from cluster import Cluster, User

JOB = 4242
TIMEOUT_MS = 1500  # DRC_TIMEOUT_MS for the daemon-down tests


def run(cluster: Cluster, clib: CLib, user: str, argv: list, **env: str):
    return cluster.run_as(user, [str(a) for a in argv], extra_env={**clib.env(), **env})


def in_job(cluster: Cluster, clib: CLib, user: str, argv: list):
    """Run argv as a task of JOB (drc-embedded's stand-in for the SPANK plugin)."""
    cmd = cluster.embedded("run", "--job", str(JOB), "--user", user, "--")
    return cluster.run_as(None, cmd + [str(a) for a in argv], extra_env=clib.env())


@contextmanager
def serving(cluster: Cluster, clib: CLib, client: Path, target: User) -> Iterator[tuple[int, int]]:
    """alice acquires a FLEX credential, grants target's uid and JOB, accesses it and holds it
    (a transient credential lives as long as its process); yields (credential, cookie1)."""
    proc = spawn_as(cluster, "alice", [str(client), "serve", str(target.uid), str(JOB)], clib.env())
    try:
        line = proc.stdout.readline()
        assert line, f"alice's server failed: {proc.communicate(timeout=10)[1]}"
        credential, cookie = map(int, line.split())
        yield credential, cookie
        _, err = proc.communicate("done\n", timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def credential_info(cluster: Cluster, credential: int) -> dict | None:
    return next((c for c in cluster.server().list() if c["credential"] == credential), None)


def node_counters(cluster: Cluster) -> dict[str, int]:
    with SyncBusClient(cluster.address) as bus:
        return bus.call("org.drc.Node", "/org/drc/Node", "org.drc.Node", "Counters", "", [])[0]


def test_flex_credential_shared_with_a_uid_and_a_job(node, users, clib, client):
    with serving(node, clib, client, users["bob"]) as (cred, cookie):
        bob = run(node, clib, "bob", [client, "access", cred])
        assert bob.returncode == 0, bob.stderr
        assert int(bob.stdout.split()[0]) == cookie

        carol = run(node, clib, "carol", [client, "access", cred])
        assert carol.returncode == Code.EPERM, carol.stderr
        assert "DRC_EPERM" in carol.stderr

        carol_in_job = in_job(node, clib, "carol", [client, "access", cred])
        assert carol_in_job.returncode == 0, carol_in_job.stderr
        assert int(carol_in_job.stdout.split()[0]) == cookie
        assert in_job(node, clib, "carol", [client, "wlm"]).stdout.split() == [str(JOB)]
        assert run(node, clib, "carol", [client, "wlm"]).stdout.split() == ["0"]
        assert credential_info(node, cred)["refs"] == 1  # bob and carol released theirs
    info = credential_info(node, cred)
    assert info is None or info["refs"] == 0  # alice's release was the last one


def test_no_permanent_refusal_is_einval_and_c_reads_the_reason(node, users, clib, client):
    """The Seen case: a peer outside any job sent its WLM id 0; granting it must not be the
    -DRC_EINVAL that Cray clients retry forever, and the C caller learns why."""
    with serving(node, clib, client, users["bob"]) as (cred, _cookie):
        before = credential_info(node, cred)
        cases = [
            (["grant", cred, 0, 16], Code.EBADTARGET, "job (WLM) id 0 means 'no job'"),
            (["grant", cred, 2**32 - 1, 4], Code.EBADTARGET, "is the invalid id (-1)"),
            (["grant", cred, users["carol"].uid, 4 | 8], Code.EFLAGS, "exactly one of"),
            (["grant", cred, 1, 1 << 9], Code.EFLAGS, "other than TARGET_UID|GID|WLM"),
            (["revoke", cred, JOB + 1, 16], Code.EBADTARGET, "is not granted to"),
            (["grant", 999999, 1, 4], Code.CRED_NOT_FOUND, "credential 999999"),
        ]
        for argv, code, reason in cases:
            result = run(node, clib, "alice", [client, *argv])
            assert result.returncode == code, (argv, result.stderr)
            assert reason in result.stderr, (argv, result.stderr)
        carol = run(node, clib, "carol", [client, "access", cred])
        assert carol.returncode == Code.EPERM
        detail = carol.stderr.split("detail: ", 1)[1]
        assert f"uid {users['carol'].uid}" in detail, carol.stderr  # not just "invalid permissions"
        assert credential_info(node, cred) == before  # each refusal changed nothing


def test_children_of_a_task_are_in_its_job(node, users, clib, client):
    """Under a wrapper shell (as under mpirun or strace) the task's children call as the job:
    drc_get_wlm_id() is the job and carol, granted only through the job, gets access."""
    with serving(node, clib, client, users["bob"]) as (cred, cookie):
        script = f"{client} wlm && sh -c '{client} access {cred}'"
        wrapped = in_job(node, clib, "carol", ["sh", "-c", script])
        assert wrapped.returncode == 0, wrapped.stderr
        wlm, cookie1 = wrapped.stdout.split()[:2]
        assert (int(wlm), int(cookie1)) == (JOB, cookie)
        outside = run(node, clib, "carol", ["sh", "-c", script])
        assert outside.stdout.split()[:1] == ["0"] and outside.returncode == Code.EPERM


def audit_lines(cluster: Cluster, since: int) -> list[str]:
    log = Path(cluster.emb.state_dir) / "drcc.log"
    return [line for line in log.read_text()[since:].splitlines() if "drc.audit: refused " in line]


def test_every_refusal_is_audited_rate_limited_and_counted(node, users, clib, client):
    log = Path(node.emb.state_dir) / "drcc.log"
    carol = users["carol"]
    with serving(node, clib, client, users["bob"]) as (cred, _cookie):
        since = len(log.read_text())
        before = node_counters(node)
        assert run(node, clib, "carol", [client, "access", cred]).returncode == Code.EPERM
        (line,) = audit_lines(node, since)
        assert re.search(
            rf"refused verb=Access uid={carol.uid} job=0 node=\S+ credential={cred}"
            rf' code=DRC_EPERM reason="uid {carol.uid} \(job 0\) is not granted',
            line,
        ), line

        loops = 300  # a client retrying a refusal in a tight loop
        proc = spawn_as(node, "carol", [str(client), "repl"], clib.env())
        repl = Repl(proc)
        try:
            start = time.monotonic()
            for _ in range(loops):
                assert repl.ask(f"access {cred}")[0] == -Code.EPERM
            elapsed = time.monotonic() - start
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
        lines = audit_lines(node, since)
        after = node_counters(node)
    assert after["refused_EPERM"] - before.get("refused_EPERM", 0) == loops + 1
    written = len(lines) - 1
    assert written <= BURST + RATE * (elapsed + 1), (written, elapsed)
    dropped = after["refused_lines_suppressed"] - before.get("refused_lines_suppressed", 0)
    assert written + dropped == loops
    time.sleep(1.5 / RATE)  # the bucket refills: the next refusal is written, with the count
    since = len(log.read_text())
    assert run(node, clib, "carol", [client, "access", cred]).returncode == Code.CRED_NOT_FOUND
    (line,) = audit_lines(node, since)
    assert "code=DRC_CRED_NOT_FOUND" in line and re.search(r" suppressed=\d+$", line), line


def test_token_path(node, users, clib, client):
    with serving(node, clib, client, users["bob"]) as (cred, cookie):
        token = run(node, clib, "alice", [client, "token", cred])
        assert token.returncode == 0, token.stderr
        token = token.stdout.strip()

        bob = run(node, clib, "bob", [client, "access-token", token])
        assert bob.returncode == 0, bob.stderr
        assert int(bob.stdout.split()[0]) == cookie

        forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        bad = run(node, clib, "bob", [client, "access-token", forged])
        assert bad.returncode == Code.BAD_TOKEN, bad.stderr

        carol = run(node, clib, "carol", [client, "access-token", token])
        assert carol.returncode == Code.EPERM, carol.stderr


def test_valgrind_clean_over_a_full_cycle(node, users, clib, client):
    result = node.run_as(
        "alice",
        [*VALGRIND, str(client), "cycle", str(users["bob"].uid)],
        extra_env=clib.env(),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "cycle ok" in result.stdout


def test_16_threads_access_one_credential(node, users, clib, client):
    with serving(node, clib, client, users["bob"]) as (cred, _cookie):
        before = node_counters(node)
        bob = run(node, clib, "bob", [client, "threads", cred, 16])
        assert bob.returncode == 0, bob.stderr
        assert bob.stdout.split() == ["16"]
        after = node_counters(node)
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in ("access_forwarded", "access_local")}
    assert grew == {"access_forwarded": 1, "access_local": 15}  # one DRCS request


def test_more_threads_than_connections_still_return_by_the_deadline(node, users, clib, client):
    """20 threads share libdrc's 8 connections; with DRCC hung, those waiting for a connection
    give up at their own deadline too, not one timeout after another."""
    env = {**clib.env(), "DRC_TIMEOUT_MS": str(TIMEOUT_MS)}
    with serving(node, clib, client, users["bob"]) as (cred, _cookie):
        os.kill(node.emb.drcc_pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            proc = spawn_as(node, "bob", [str(client), "threads", str(cred), "20"], env)
            out, err = proc.communicate(timeout=60)
            elapsed = time.monotonic() - start
        finally:
            os.kill(node.emb.drcc_pid, signal.SIGCONT)
    assert proc.returncode == Code.ECONNREFUSED, err
    assert out.split() == ["0"]
    assert elapsed < TIMEOUT_MS / 1000 + 1.0, elapsed


def test_a_forked_child_gets_its_own_connection(node, users, clib, client):
    with serving(node, clib, client, users["bob"]) as (cred, cookie):
        result = node.run_as(
            "bob", [*VALGRIND, str(client), "fork", str(cred)], extra_env=clib.env(), timeout=180
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()  # parent, child, parent again
        assert len(lines) == 3 and len(set(lines)) == 1, lines
        assert lines[0].split()[0] == str(cookie)


class Repl:
    """One long-lived drc_client that outlives DRCC."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def ask(self, line: str) -> list[int]:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        assert answer, self.proc.communicate(timeout=10)[1]
        return [int(x) for x in answer.split()]


def _kill(pid: int, sig: signal.Signals) -> None:
    os.kill(pid, sig)
    if sig == signal.SIGKILL:
        wait_for(lambda: not alive(pid), 10, what=f"pid {pid} to die", interval=0.02)


def test_drcc_down_then_back_without_restarting_the_client(node, users, clib, client):
    limit_us = TIMEOUT_MS * 1000
    env = {**clib.env(), "DRC_TIMEOUT_MS": str(TIMEOUT_MS)}
    with serving(node, clib, client, users["bob"]) as (cred, _cookie):
        proc = spawn_as(node, "bob", [str(client), "repl"], env)
        repl = Repl(proc)
        try:
            assert repl.ask(f"hold {cred}")[0] == 0

            _kill(node.emb.drcc_pid, signal.SIGKILL)  # DRCC gone: the bus answers at once
            *rcs, slowest = repl.ask(f"all {cred}")
            assert rcs == [-Code.ECONNREFUSED] * 8
            assert slowest < limit_us

            node.emb.start_node()
            assert repl.ask(f"access {cred}")[0] == 0

            _kill(node.emb.drcc_pid, signal.SIGSTOP)  # DRCC hangs: the timeout answers
            try:
                for line in (f"access {cred}", "acquire"):
                    rc, usec = repl.ask(line)
                    assert rc == -Code.ECONNREFUSED
                    assert 0.9 * limit_us <= usec <= limit_us + 300_000
            finally:
                os.kill(node.emb.drcc_pid, signal.SIGCONT)
            assert repl.ask(f"access {cred}")[0] == 0
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
        assert proc.returncode == 0, proc.stderr.read()
