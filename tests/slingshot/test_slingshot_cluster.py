"""Slingshot end to end: real DRCS, DRCC, D-Bus, MUNGE-signed link and users; the stand-in
libcxi (NOT libcxi) plays the NICs. What a site would see: shared VNIs across jobs, services
only for admitted members, services gone with the last reference, VNIs back only after every
node cleaned up."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

from clib.support import VALGRIND
from slingshot.sling_harness import (
    LNI_PROBE,
    NICS,
    VNI_MAX,
    VNI_MIN,
    StandInNics,
    restart_node,
)

from drc.embedded.polling import wait_for
from drc.embedded.processes import terminate
from drc.node.cxi import LibCxi, service_desc

from cluster import Cluster

SHARE_WITH_BOB = (
    "import pwd\ncred = client.acquire(client.FLEX)\n"
    "client.grant(cred, uid=pwd.getpwnam('bob').pw_uid)\nprint(cred)"
)
ACCESS = """
import json
try:
    a = client.access_slingshot({cred})
    print(json.dumps({{"vni": a.vni, "svc_ids": list(a.svc_ids), "devices": list(a.devices),
                      "key": a.auth_key(), "env": a.environment()}}))
except client.DrcError as e:
    print(json.dumps({{"error": e.name}}))
"""


def acquire(cluster: Cluster, job: int, user: str = "alice", code: str = SHARE_WITH_BOB) -> int:
    r = cluster.in_job(job, user, code)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def access(cluster: Cluster, job: int, user: str, cred: int) -> dict:
    r = cluster.in_job(job, user, ACCESS.format(cred=cred))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def lni(cluster: Cluster, user: str, lib: Path, svc: int) -> int:
    standin = {"CXI_STANDIN_DIR": os.environ["CXI_STANDIN_DIR"]}
    r = cluster.python(user, LNI_PROBE.format(lib=str(lib), svc=svc), extra_env=standin)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def pending(cluster: Cluster) -> list[str]:
    return [p["object"] for p in cluster.server().status()["pending_cleanups"]]


def uid(name: str) -> int:
    import pwd

    return pwd.getpwnam(name).pw_uid


def test_alice_and_bob_share_a_vni_and_carol_can_neither_use_it_nor_forge_it(
    cluster: Cluster, nics: StandInNics, standin_lib: Path
):
    cred = acquire(cluster, 101)
    alice = access(cluster, 101, "alice", cred)
    bob = access(cluster, 202, "bob", cred)
    assert alice["vni"] == bob["vni"] == VNI_MIN
    assert alice["devices"] == bob["devices"] == list(NICS)
    assert alice["key"] == f"{alice['svc_ids'][0]}:{VNI_MIN}"
    assert alice["env"] == {
        "SLINGSHOT_VNIS": str(VNI_MIN),
        "SLINGSHOT_SVC_IDS": ",".join(map(str, alice["svc_ids"])),
        "SLINGSHOT_DEVICES": "cxi0,cxi1",
    }
    # One service per member and NIC, restricted to that uid, the VNI and the configured TCs.
    for i, nic in enumerate(NICS):
        by_id = {s.svc_id: s for s in nics.drc_services(nic)}
        assert set(by_id) == {alice["svc_ids"][i], bob["svc_ids"][i]}
        assert by_id[alice["svc_ids"][i]].members == ((1, uid("alice")),)
        assert by_id[bob["svc_ids"][i]].members == ((1, uid("bob")),)
        assert all(s.vnis == (VNI_MIN,) and s.tcs == 0b1010 for s in by_id.values())
    # A second process of alice's job reuses her services.
    assert access(cluster, 101, "alice", cred)["svc_ids"] == alice["svc_ids"]
    # libcxi lets members in, nobody else (root included); DRCS refuses carol's access.
    assert lni(cluster, "alice", standin_lib, alice["svc_ids"][0]) == 0
    assert lni(cluster, "bob", standin_lib, bob["svc_ids"][0]) == 0
    assert lni(cluster, "carol", standin_lib, alice["svc_ids"][0]) == -errno.EPERM
    assert lni(cluster, "bob", standin_lib, alice["svc_ids"][0]) == -errno.EPERM
    assert access(cluster, 303, "carol", cred) == {"error": "DRC_EPERM"}
    assert len(nics.drc_services("cxi0")) == 2
    listed = {c["credential"]: c for c in cluster.server().list()}
    assert listed[cred]["vni"] == VNI_MIN
    header, *rows = cluster.drccli(None, "list", check=True).stdout.splitlines()
    assert header.split()[-1] == "VNI"
    assert [r.split()[-1] for r in rows if r.split()[0] == str(cred)] == [str(VNI_MIN)]
    # A forged node request (carol speaking for alice) builds nothing.
    before = [nics.services(nic) for nic in NICS]
    forged_node_requests_are_refused(cluster, cred)
    assert [nics.services(nic) for nic in NICS] == before


def test_services_go_with_the_last_reference_and_the_vni_comes_back(
    cluster: Cluster, nics: StandInNics
):
    cred = acquire(cluster, 101)
    alice = access(cluster, 101, "alice", cred)
    bob = access(cluster, 202, "bob", cred)
    # A revoke blocks new accesses only: bob's live services stay.
    r = cluster.in_job(
        101, "alice", f"import pwd\nclient.revoke({cred}, uid=pwd.getpwnam('bob').pw_uid)"
    )
    assert r.returncode == 0, r.stderr
    assert access(cluster, 203, "bob", cred) == {"error": "DRC_EPERM"}
    time.sleep(0.5)
    assert bob["svc_ids"][0] in {s.svc_id for s in nics.drc_services()}
    r = cluster.in_job(202, "bob", f"print(client.release({cred}))")
    assert r.returncode == 0, r.stderr
    # bob's release: his services go, alice's stay
    assert wait_for(lambda: {s.svc_id for s in nics.drc_services()} == {alice["svc_ids"][0]})
    assert bob["svc_ids"][1] not in {s.svc_id for s in nics.drc_services("cxi1")}
    cluster.end_job(101)  # the epilog: the last reference, the credential is freed
    assert wait_for(lambda: not nics.drc_services("cxi0") and not nics.drc_services("cxi1"))
    # the node confirmed, the quarantine (1 s) passed: the VNI is free again
    assert wait_for(lambda: pending(cluster) == [])
    assert {s.svc_id for s in nics.services()} == {1}  # the default service is never touched


def test_busy_destroys_are_retried_and_hold_the_vni_out_of_the_pool(
    cluster: Cluster, nics: StandInNics
):
    cred = acquire(cluster, 101, code="print(client.acquire(client.FLEX))")
    access(cluster, 101, "alice", cred)
    nics.inject("destroy", 1000, errno.EBUSY)  # traffic still drains
    cluster.end_job(101)
    others = [acquire(cluster, 102 + i, code="print(client.acquire(0))") for i in range(2)]
    r = cluster.in_job(105, "bob", "print(client.acquire(0))")
    assert "DRC_ENOSPC" in r.stderr  # VNI_MIN waits for the node: the pool is exhausted
    time.sleep(3)
    assert len(nics.drc_services("cxi0")) == 1
    assert pending(cluster) == [f"VNI {VNI_MIN}"]
    status = cluster.drccli(None, "status", check=True).stdout
    assert f"VNIs {VNI_MIN}..{VNI_MAX}" in status
    assert "2 allocated, 1 waiting for node cleanup, 0 free of 3" in status
    assert f"VNI {VNI_MIN} of freed credential {cred}" in status
    assert "waiting for node(s)" in status
    restart_node(cluster)  # the retry survives a DRCC restart: the NIC remembers the service
    time.sleep(1)
    assert len(nics.drc_services("cxi0")) == 1 and pending(cluster) == [f"VNI {VNI_MIN}"]
    nics.clear_faults()
    assert wait_for(lambda: not nics.drc_services("cxi0") and pending(cluster) == [], 30)
    again = acquire(cluster, 106, "bob", "print(client.acquire(0))")
    vnis = {c["credential"]: c["vni"] for c in cluster.server().list()}
    assert vnis[again] == VNI_MIN and {vnis[o] for o in others} == {VNI_MIN + 1, VNI_MAX}
    assert cluster.counters()["cxi_destroy_busy"] >= 2


def test_drcc_restart_removes_leftover_services_and_leaves_others_alone(
    cluster: Cluster, nics: StandInNics, standin_lib: Path
):
    lib = LibCxi(str(standin_lib))
    dev = lib.open(0)
    try:
        leftover = lib.alloc_svc(dev, service_desc(VNI_MAX, uid("carol"), [], {}))
        slurms = lib.alloc_svc(dev, service_desc(1500, uid("carol"), [], {}))  # Slurm's range
    finally:
        lib.close(dev)
    restart_node(cluster)
    assert wait_for(lambda: {s.svc_id for s in nics.services()} == {1, slurms})
    assert leftover not in {s.svc_id for s in nics.services()}


def test_drcc_restart_with_dead_holders_and_a_node_reboot_clean_up(
    cluster: Cluster, nics: StandInNics
):
    code = (
        "import sys, time\nfrom drc import client\ncred = client.acquire(client.FLEX)\n"
        "a = client.access_slingshot(cred)\nprint(a.vni, flush=True)\ntime.sleep(60)\n"
    )
    holder = subprocess.Popen(
        ["runuser", "-u", "alice", "--", "/usr/bin/python3", "-c", code],
        env=cluster.env(),
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
        start_new_session=True,
    )
    try:
        assert holder.stdout is not None and int(holder.stdout.readline()) == VNI_MIN
        assert len(nics.drc_services("cxi0")) == 1
        terminate(cluster.emb.drcc_pid)
        os.killpg(holder.pid, signal.SIGKILL)  # runuser and the holder below it
        holder.wait(timeout=10)
        cluster.emb.start_node()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
    assert wait_for(lambda: not nics.drc_services("cxi0") and not nics.drc_services("cxi1"))
    assert wait_for(lambda: pending(cluster) == [])
    # Then the node reboots: DRCS drops its references, DRCC confirms the fresh NICs.
    node_reboot_drops_references_and_confirms_the_vni(cluster, nics)


def node_reboot_drops_references_and_confirms_the_vni(cluster: Cluster, nics: StandInNics):
    cred = acquire(cluster, 101, code="print(client.acquire(client.FLEX))")
    access(cluster, 101, "alice", cred)
    terminate(cluster.emb.drcc_pid)
    nics.reset()  # a reboot leaves fresh NICs
    (cluster.state_dir / "boot_id").write_text("boot-2\n")
    cluster.emb.start_node()
    assert wait_for(lambda: cred not in {c["credential"] for c in cluster.server().list()})
    assert wait_for(lambda: pending(cluster) == [])


def forged_node_requests_are_refused(cluster: Cluster, cred: int) -> None:
    """carol names alice's uid in a node request, on the bus and on the DRC link: refused."""
    link = tomllib.loads(cluster.emb.config.read_text())["link"]
    host, port = link["listen"].rsplit(":", 1)
    forged = FORGED.format(
        cred=cred, host=host, port=int(port), socket=link["munge_socket"], uid=uid("alice")
    )
    r = cluster.python("carol", forged)
    assert r.returncode == 0, r.stderr
    bus, over_link = r.stdout.splitlines()
    assert bus.startswith("refused DRC_EPERM")
    assert over_link.startswith("refused") and "not a node daemon" in over_link


FORGED = """
import asyncio
from drc.bus import SyncBusClient
from drc.link import LinkClient, Munge
wire = {{"uid": {uid}, "gid": 0, "job": 101, "node": "x"}}
try:
    SyncBusClient(timeout=5).call(
        "org.drc.Server", "/org/drc/Server", "org.drc.Server", "NodeAccess", "a{{sv}}u",
        [wire, {cred}])
    print("accepted")
except Exception as e:
    print("refused", e)

async def main():
    c = LinkClient("{host}", {port}, munge=Munge("{socket}"), server_uid=0, timeout=5)
    try:
        await c.call("NodeAccess", [wire, {cred}])
        print("accepted")
    except Exception as e:
        print("refused", e)
    finally:
        await c.close()

asyncio.run(main())
"""


def test_a_mercury_style_c_client_prints_the_auth_key(
    cluster: Cluster, nics: StandInNics, mercury_client
):
    clib, binary = mercury_client
    cred = acquire(cluster, 101)
    python_view = access(cluster, 202, "bob", cred)
    argv = cluster.embedded(
        "run", "--job", "202", "--user", "bob", "--", *VALGRIND, str(binary), str(cred)
    )
    r = cluster.run_as(None, argv, extra_env=clib.env(), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"vni {VNI_MIN} first_cookie {VNI_MIN}"
    assert lines[1:] == [
        f"{nic} auth_key {svc}:{VNI_MIN}"
        for nic, svc in zip(NICS, python_view["svc_ids"], strict=True)
    ]
    r = cluster.run_as(
        None,
        cluster.embedded("run", "--job", "303", "--user", "carol", "--", str(binary), str(cred)),
        extra_env=clib.env(),
    )
    assert r.returncode == 1 and r.stdout.startswith("error ")
