"""Attack: carol takes over a job's identity through pid reuse (issue 20, item 1).

carol (no job) opens a bus connection in process P, leaves the socket to a child and lets P
exit. Once pid P belongs to a task of alice's job 101, the child calls on the old connection:
the bus still reports pid P for it. Real daemons, real users, a real reused pid: the test (root)
writes ``/proc/sys/kernel/ns_last_pid`` so alice's task is forked at exactly P, as wrapping
pids (pid_max 32768) would do given time.

This machine's dbus-daemon (1.14) gives no ``ProcessFD``, so this is the fallback's test: the
process at the pid runs as another user, and it started after the connection appeared.
"""

from __future__ import annotations

import json
import time

import pytest
from pidreuse import SCENARIOS, PidTaken

from drc.bus import SyncBusClient
from drc.core.errors import Code
from drc.node.exports import BUS_NAME, INTERFACE, OBJECT_PATH

from cluster import Cluster, User

#: carol's attacker, run as carol. Its first line out is P (already exited and reaped); it
#: then waits for a line naming a credential, calls on P's connection from P's child, and
#: prints each call's answer (its out args, or its D-Bus error name) as JSON.
ATTACKER = r"""
import asyncio, json, os, sys
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

SERVICE, CALLS = sys.argv[1], json.loads(sys.argv[2])
PATH = "/" + SERVICE.replace(".", "/")
WHERE = dict(destination=SERVICE, path=PATH, interface=SERVICE)
done_r, done_w = os.pipe()
p = os.fork()
if p == 0:  # P: opens the connection, leaves it to a child, exits
    os.close(done_r)
    async def connect():
        return await MessageBus(bus_type=BusType.SYSTEM).connect()
    loop = asyncio.new_event_loop()
    bus = loop.run_until_complete(connect())
    if os.fork() == 0:  # the keeper: waits until the pid is reused, then calls
        cred = int(sys.stdin.readline())
        out = {}
        for member, sig, body in CALLS:
            body = [cred if a == "CRED" else a for a in body]
            msg = Message(member=member, signature=sig, body=body, **WHERE)
            reply = loop.run_until_complete(asyncio.wait_for(bus.call(msg), 10))
            error = reply.message_type is MessageType.ERROR
            out[member] = reply.error_name if error else reply.body
        print(json.dumps(out), flush=True)
        os._exit(0)
    os._exit(0)
os.close(done_w)
os.waitpid(p, 0)
print(p, flush=True)
os.read(done_r, 1)  # EOF once the keeper is done
"""

NODE_CALLS = [
    ["GetWlmId", "", []],
    ["Access", "uu", ["CRED", 0]],
    ["GetCredentialToken", "u", ["CRED"]],
    ["Release", "uu", ["CRED", 0]],
]


class Attacker:
    """carol's attacker process (see ATTACKER), stopped by pid whatever happens."""

    def __init__(self, cluster: Cluster, service: str, calls: list) -> None:
        self.proc = cluster.spawn(
            ["runuser", "-u", "carol", "--", "/usr/bin/python3", "-c", ATTACKER, service,
             json.dumps(calls)]
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip().isdigit(), self.proc.stderr.read() if self.proc.stderr else line
        self.pid = int(line)  # P: exited; its connection lives on in the keeper

    def attack(self, credential: int) -> dict[str, object]:
        out, err = self.proc.communicate(f"{credential}\n", timeout=60)
        assert self.proc.returncode == 0 and out, err
        return json.loads(out)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def attack_from_reused_pid(
    cluster: Cluster,
    service: str,
    calls: list,
    credential: int,
    spawn,
    owner: User,
    job: int = 0,
    wait: float = 0.0,
) -> dict[str, object]:
    """carol's attack once pid P is a task of ``owner`` (registered in ``job`` if given)."""
    for _ in range(SCENARIOS):
        attacker = Attacker(cluster, service, calls)
        try:
            time.sleep(wait)
            task = spawn(attacker.pid, owner)
            if job:
                register(cluster, task, job)  # pid P is now a task of the job
            return attacker.attack(credential)
        except PidTaken:
            continue  # another process took P: try again with a new P
        finally:
            attacker.stop()
    raise AssertionError(f"pid reuse could not be set up in {SCENARIOS} tries (busy machine?)")


def register(cluster: Cluster, pid: int, job: int) -> None:
    """What the SPANK plugin's task_post_fork does: vouch that ``pid`` is a task of ``job``."""
    with SyncBusClient(cluster.address) as bus:
        bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, "RegisterJobPid", "uu", [pid, job])


def alice_acquires_in_job_101(cluster: Cluster, code: str = "") -> int:
    r = cluster.in_job(101, "alice", f"cred = client.acquire(client.FLEX)\n{code}print(cred)")
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[-1])


def state(cluster: Cluster) -> list[dict]:
    return sorted(cluster.server().list(), key=lambda c: c["credential"])


@pytest.mark.parametrize(
    ("owner", "job"),
    [("alice", 101), ("carol", 303)],
    ids=["another-users-task", "carols-own-task-in-a-job"],
)
def test_a_reused_pid_does_not_give_carol_the_job_of_its_next_owner(
    cluster: Cluster, users: dict[str, User], task_at_pid, owner: str, job: int
) -> None:
    """alice's task: the process runs as another uid (check 1). carol's own task in job 303:
    same uid, but it started after carol's connection appeared (check 2); without it, carol
    outside any job would act as job 303 (a job's references, limits and grants)."""
    cred = alice_acquires_in_job_101(cluster)
    before = state(cluster)
    # Check 2's resolution is one clock tick (10 ms) plus the time DRCC takes to hear of the
    # connection: a reuse by wrapping pids takes seconds, this one would not.
    wait = 0.1 if owner == "carol" else 0.0
    answers = attack_from_reused_pid(
        cluster, "org.drc.Node", NODE_CALLS, cred, task_at_pid, users[owner], job, wait
    )
    refused = Code.EPERM.dbus_name
    assert answers == {name: refused for name, *_ in NODE_CALLS}, answers
    assert state(cluster) == before  # alice's reference is still there, nothing else changed


def test_a_reused_pid_does_not_give_carol_alices_group_at_drcs(
    cluster: Cluster, users: dict[str, User], task_at_pid
) -> None:
    """DRCS's own bus callers: P's connection must not take the primary group of the pid's
    next owner (alice granted her group, carol is not in it)."""
    cred = alice_acquires_in_job_101(cluster, "import os\nclient.grant(cred, gid=os.getgid())\n")
    before = state(cluster)
    calls = [["Access", "uu", ["CRED", 0]]]
    answers = attack_from_reused_pid(
        cluster, "org.drc.Server", calls, cred, task_at_pid, users["alice"]
    )
    assert answers == {"Access": Code.EPERM.dbus_name}, answers
    assert state(cluster) == before
