"""ALPS end to end: real DRCS (alps provider), DRCC (alps adapter), epilog hook, users, libdrc,
against the ALPS stand-in (tests/alps/standin; NOT ALPS)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from alps.alps_harness import EPILOG, REPO, Alps, restart_daemons

from drc.embedded.polling import wait_for
from drc.embedded.processes import terminate

from cluster import Cluster

RESID = 190
CONTAINER = 0x1C5E0000001
ACQUIRE = (
    "from drc import client\n"
    "c = client.acquire()\n"
    "i = client.access(c)\n"
    "print(c, i.cookie1, i.cookie2, client.get_wlm_id())\n"
)


def in_container(
    cluster: Cluster, alps: Alps, container: int, user: str | None, argv: list[str]
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (as ``user``) inside job ``container``, as the batch system would start it.

    The process waits on stdin until it has been placed, so it never calls DRC unplaced.
    """
    prefix = [] if user is None else ["runuser", "-u", user, "--"]
    proc = subprocess.Popen(
        ["/bin/sh", "-c", 'read go && exec "$@"', "sh", *prefix, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cluster.env(),
        text=True,
        cwd="/",
    )
    alps.standin.place(proc.pid, container)
    out, err = proc.communicate("go\n", timeout=60)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def acquire_in_reservation(cluster: Cluster, alps: Alps, user: str = "alice") -> list[int]:
    alps.standin.reserve(RESID, CONTAINER, user=user)
    r = in_container(cluster, alps, CONTAINER, user, ["/usr/bin/python3", "-c", ACQUIRE])
    assert r.returncode == 0, r.stderr
    cred, cookie1, cookie2, wlm = map(int, r.stdout.split())
    assert wlm == RESID  # the job container, mapped by apstat -r -v, is the reservation
    return [cred, cookie1, cookie2]


def epilog(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return cluster.run_as(
        None,
        ["/usr/bin/python3", str(EPILOG), *args],
        extra_env={"PYTHONPATH": str(cluster.runtime.lib)},
    )


def test_reservation_end_drops_references_and_removes_the_pdomain(cluster: Cluster, alps: Alps):
    cred, cookie1, cookie2 = acquire_in_reservation(cluster, alps)
    [c] = cluster.server().list()
    assert (c["credential"], c["wlm"], c["uid"]) == (cred, RESID, cluster_uid("alice"))
    assert c["provider"] == "alps" and c["refs"] == 1
    pd = alps.standin.pdomains()[f"drc{cred}"]
    assert (pd["cookie"], pd["cookie2"]) == (cookie1, cookie2)
    assert RESID in cluster.server().outstanding_jobs()

    alps.standin.end(RESID)
    r = epilog(cluster, str(RESID))
    assert r.returncode == 0, r.stderr
    assert f"freed credential(s): {cred}" in r.stderr
    assert cluster.server().list() == []
    assert alps.standin.pdomains() == {}
    # Idempotent: a second run (ALPS retrying the hook) changes nothing and succeeds.
    r = epilog(cluster, str(RESID))
    assert r.returncode == 0 and "freed credential(s): none" in r.stderr


def test_epilog_survives_a_drc_outage_unless_strict(cluster: Cluster, alps: Alps):
    terminate(cluster.emb.drcc_pid)
    r = epilog(cluster, str(RESID))
    assert r.returncode == 0 and "could not tell DRC" in r.stderr
    r = epilog(cluster, "--strict", str(RESID))
    assert r.returncode == 1
    assert epilog(cluster, "not-a-resid").returncode == 2


def test_reservation_ending_while_drcs_is_down_is_expired_by_reconcile(
    cluster: Cluster, alps: Alps
):
    from drc.jedi.main import reconcile

    cred, _, _ = acquire_in_reservation(cluster, alps)
    terminate(cluster.emb.drcs_pid)
    alps.standin.end(RESID)
    r = epilog(cluster, str(RESID))  # DRCC is up but cannot reach DRCS: logged, exit 0
    assert r.returncode == 0 and "could not tell DRC" in r.stderr
    cluster.emb.start_server()
    assert [c["credential"] for c in cluster.server().list()] == [cred]  # nobody told DRCS

    # drc-jedi reconcile with [jedi] wlm = "alps": apstat -r no longer lists the reservation.
    result = reconcile(cluster.emb.config)
    assert result.expired == [RESID] and result.freed == [cred]
    assert cluster.server().list() == []
    assert alps.standin.pdomains() == {}


def test_reconcile_keeps_live_reservations_and_expires_nothing_when_apstat_fails(
    cluster: Cluster, alps: Alps
):
    from drc.jedi.main import reconcile
    from drc.wlm import WlmError

    cred, _, _ = acquire_in_reservation(cluster, alps)
    assert reconcile(cluster.emb.config).expired == []
    alps.standin.end(RESID)
    alps.standin.fail_next("apstat")
    try:
        reconcile(cluster.emb.config)
    except WlmError:
        pass
    else:
        raise AssertionError("a failing apstat must raise WlmError, not look like no jobs")
    assert [c["credential"] for c in cluster.server().list()] == [cred]


def test_two_cookies_end_to_end(cluster: Cluster, alps: Alps, tmp_path: Path):
    subprocess.run(["make", "-C", str(REPO / "lib")], check=True, capture_output=True)
    pc_dir = REPO / "lib" / "build"
    flags = subprocess.run(
        ["pkg-config", "--cflags", "--libs", "cray-drc"],
        env={**os.environ, "PKG_CONFIG_PATH": str(pc_dir)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    exe = tmp_path / "two_cookies"
    src = Path(__file__).with_name("two_cookies.c")
    rpath = f"-Wl,-rpath,{pc_dir}"  # where lib/Makefile put libdrc.so.1
    subprocess.run(["cc", "-Wall", "-Werror", "-o", str(exe), str(src), *flags, rpath], check=True)

    alps.standin.reserve(RESID, CONTAINER, user="root")
    r = in_container(cluster, alps, CONTAINER, None, [str(exe)])
    assert r.returncode == 0, r.stderr
    cred, cookie1, cookie2 = map(int, r.stdout.split())
    pd = alps.standin.pdomains()[f"drc{cred}"]
    assert cookie1 == pd["cookie"] and cookie2 == pd["cookie2"] and cookie2 not in (0, cookie1)

    out = cluster.drccli(None, "list", check=True).stdout
    header, row = out.splitlines()[0].split(), out.splitlines()[-1].split()
    assert "Cookie1" in header and "Cookie2" in header
    line = dict(zip(header, row, strict=True))
    assert int(line["Cookie1"]) == cookie1 and int(line["Cookie2"]) == cookie2
    assert int(line["wlmid"]) == RESID


def test_pdomain_apmgr_fails_to_create_leaves_no_credential(cluster: Cluster, alps: Alps):
    alps.standin.fail_next("create")
    r = cluster.drccli(None, "acquire")
    assert r.returncode != 0 and "DRC_CRED_EXTERNAL_FAILURE" in r.stderr
    assert "apmgr" in r.stderr
    assert cluster.server().list() == []
    assert alps.standin.pdomains() == {}
    status = cluster.drccli(None, "status", check=True).stdout
    assert "0 allocated, 4 free of 4" in status
    # The failure left nothing behind: the next acquire works.
    assert cluster.drccli(None, "acquire").returncode == 0


def test_pdomain_created_but_unreadable_is_removed_again(cluster: Cluster, alps: Alps):
    alps.standin.fail_next("apstat")  # apmgr creates it, apstat -P cannot list it
    r = cluster.drccli(None, "acquire")
    assert r.returncode != 0 and "DRC_CRED_EXTERNAL_FAILURE" in r.stderr
    assert cluster.server().list() == []
    assert alps.standin.pdomains() == {}  # compensated: removed after the rollback


def test_failed_removal_is_retried_and_reported_never_leaked(cluster: Cluster, alps: Alps):
    cred = int(cluster.drccli(None, "acquire", check=True).stdout)
    name = f"drc{cred}"
    alps.standin.set_busy(name)  # an application still uses it: apmgr refuses to remove it
    cluster.drccli(None, "release", str(cred), check=True)
    assert cluster.server().list() == []  # the credential is gone at once...
    assert name in alps.standin.pdomains()  # ...its pdomain is not, and DRC knows it:
    status = cluster.drccli(None, "status", check=True).stdout
    assert "1 pending" in status and f"pdomain {name} of freed credential {cred}" in status
    assert "in use" in status
    log = Path(cluster.emb.state_dir, "drcs.log")
    assert wait_for(lambda: f"could not remove pdomain {name}" in log.read_text())
    assert "WARNING" in next(
        line for line in log.read_text().splitlines() if f"could not remove pdomain {name}" in line
    )

    # Still pending across a DRCS restart (the record is in the store, not in memory).
    restart_daemons(cluster)
    assert "1 pending" in cluster.drccli(None, "status", check=True).stdout

    alps.standin.set_busy(name, False)  # the application ended: the retry task removes it
    assert wait_for(lambda: name not in alps.standin.pdomains(), timeout=30)
    assert wait_for(
        lambda: "none pending" in cluster.drccli(None, "status", check=True).stdout, timeout=10
    )


def cluster_uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid
