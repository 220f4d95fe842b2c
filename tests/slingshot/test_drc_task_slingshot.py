"""``drc`` on a Slingshot node (the stand-in libcxi, NOT libcxi): --auth-key prints the
"svc_id:vni" of the caller's own CXI service, per NIC with --device, and --env sets
SLINGSHOT_* as the SPANK plugin does. Real DRCS, DRCC, D-Bus, MUNGE link and users."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from slingshot.sling_harness import LNI_PROBE, NICS, VNI_MIN, StandInNics

from cluster import Cluster, User

ALICE_JOB, BOB_JOB = 101, 202


def ok(done) -> str:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    return done.stdout


def lni(cluster: Cluster, user: str, lib: Path, svc: int) -> int:
    """What libcxi answers ``user`` allocating an LNI on service ``svc`` of cxi0."""
    standin = {"CXI_STANDIN_DIR": os.environ["CXI_STANDIN_DIR"]}
    r = cluster.python(user, LNI_PROBE.format(lib=str(lib), svc=svc), extra_env=standin)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def test_auth_key_is_the_callers_own_service_on_the_shared_vni(
    cluster: Cluster, nics: StandInNics, standin_lib: Path, users: dict[str, User]
) -> None:
    cred = ok(cluster.drc(ALICE_JOB, "alice", "acquire", "--flex")).strip()
    ok(cluster.drc(ALICE_JOB, "alice", "grant", cred, "--uid", "bob"))
    assert json.loads(ok(cluster.drc(BOB_JOB, "bob", "whoami", "--json")))["fabric"] == "slingshot"
    alice_key = ok(cluster.drc(ALICE_JOB, "alice", "access", cred, "--auth-key")).strip()
    bob_keys = [
        ok(cluster.drc(BOB_JOB, "bob", "access", cred, "--auth-key", "--device", str(d))).strip()
        for d in range(len(NICS))
    ]
    services = {nic: {s.svc_id: s for s in nics.drc_services(nic)} for nic in NICS}
    for d, nic in enumerate(NICS):
        svc, vni = map(int, bob_keys[d].split(":"))
        assert vni == VNI_MIN
        assert services[nic][svc].members == ((1, users["bob"].uid),)
    alice_svc, vni = map(int, alice_key.split(":"))
    assert vni == VNI_MIN and services["cxi0"][alice_svc].members == ((1, users["alice"].uid),)
    # The key works for its owner on the stand-in NIC, and for nobody else.
    bob_svc = int(bob_keys[0].split(":")[0])
    assert lni(cluster, "bob", standin_lib, bob_svc) == 0
    assert lni(cluster, "carol", standin_lib, bob_svc) == -errno.EPERM
    # Plain and JSON output carry the same facts.
    info = json.loads(ok(cluster.drc(BOB_JOB, "bob", "access", cred, "--json")))
    assert (info["vni"], info["devices"]) == (VNI_MIN, list(NICS))
    assert [f"{s}:{VNI_MIN}" for s in info["svc_ids"]] == bob_keys
    plain = ok(cluster.drc(BOB_JOB, "bob", "access", cred)).splitlines()
    assert f"svc_ids {','.join(map(str, info['svc_ids']))}" in plain
    assert f"vni {VNI_MIN}" in plain and "devices cxi0,cxi1" in plain
    # A NIC the node does not have is a usage error naming the ones it has.
    done = cluster.drc(BOB_JOB, "bob", "access", cred, "--auth-key", "--device", "2")
    assert done.returncode == 2 and "cxi0,cxi1" in done.stderr


def test_env_sets_slingshot_vars_as_the_spank_plugin_does(cluster: Cluster, nics) -> None:
    """The job's own SLINGSHOT_* (switch/hpe_slingshot's) are kept as DRC_JOB_SLINGSHOT_*."""
    cred = ok(cluster.drc(ALICE_JOB, "alice", "acquire")).strip()
    script = (
        f'eval "$(drc access {cred} --env)" || exit 9; '
        'echo "$DRC_CREDENTIAL|$SLINGSHOT_VNIS|$SLINGSHOT_SVC_IDS|$SLINGSHOT_DEVICES|'
        '$DRC_JOB_SLINGSHOT_VNIS|$DRC_JOB_SLINGSHOT_SVC_IDS|$DRC_JOB_SLINGSHOT_DEVICES"'
    )
    job_own = {"SLINGSHOT_VNIS": "1024", "SLINGSHOT_SVC_IDS": "5,6", "SLINGSHOT_DEVICES": "cxi0"}
    out = ok(cluster.task(ALICE_JOB, "alice", ["/bin/sh", "-c", script], extra_env=job_own))
    info = json.loads(ok(cluster.drc(ALICE_JOB, "alice", "access", cred, "--json")))
    svc_ids = ",".join(map(str, info["svc_ids"]))
    assert out == f"{cred}|{VNI_MIN}|{svc_ids}|cxi0,cxi1|1024|5,6|cxi0\n"
