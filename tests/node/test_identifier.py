"""The Identifier alone, over a fake process table: who is calling, and in which job.

No daemon, no bus, no root. Processes are files in a /proc-like directory (``<pid>/stat``
and ``<pid>/status``, laid out as the kernel writes them) put in place of ``drc.procfs.PROC``;
the workload manager is a small fake answering from dicts. The real process trees are in
``test_identity.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

import drc.node.caller
import drc.procfs
from drc.core.errors import DrcError
from drc.core.model import Holder
from drc.export import PeerCredentials
from drc.node.caller import Identifier

NODE = "n1"
UID, GID = 2001, 2001


class FakeProc:
    """A /proc with only the files the Identifier reads."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def add(
        self,
        pid: int,
        ppid: int,
        start: int,
        gid: int = GID,
        comm: str = "a.out",
        uid: tuple[int, int] = (UID, UID),
    ) -> int:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        # stat: "pid (comm) state ppid ..." with the start time as field 22.
        after = ["S", str(ppid), *["0"] * 17, str(start), *["0"] * 5]
        (d / "stat").write_text(f"{pid} ({comm}) {' '.join(after)}\n")
        real, eff = uid
        (d / "status").write_text(
            f"Name:\t{comm}\nUid:\t{real}\t{eff}\t{eff}\t{eff}\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\n"
        )
        return pid

    def exit(self, pid: int) -> None:
        for name in ("stat", "status"):
            (self.root / str(pid) / name).unlink()
        (self.root / str(pid)).rmdir()


@dataclass
class FakeWlm:
    """Answers from dicts and counts how often it was asked."""

    cgroup: dict[int, int] = field(default_factory=dict)
    slurmd: dict[int, int] = field(default_factory=dict)
    asked: list[str] = field(default_factory=list)
    name: str = "fake"

    def job_from_cgroup(self, pid: int) -> int | None:
        self.asked.append(f"cgroup {pid}")
        return self.cgroup.get(pid)

    def job_from_slurmd(self, pid: int) -> int | None:
        self.asked.append(f"slurmd {pid}")
        return self.slurmd.get(pid)

    def job_of_pid(self, pid: int) -> int | None:
        raise AssertionError("job_from_slurmd is preferred when the adapter has it")

    def active_jobs(self) -> set[int]:
        return set()


@pytest.fixture
def proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeProc:
    monkeypatch.setattr(drc.procfs, "PROC", tmp_path)
    fake = FakeProc(tmp_path)
    fake.add(1, 0, 1)  # init
    return fake


@pytest.fixture
def wlm() -> FakeWlm:
    return FakeWlm()


@pytest.fixture
def ident(wlm: FakeWlm) -> Identifier:
    return Identifier(NODE, wlm)


def peer(
    pid: int, sender: str = ":1.5", uid: int = UID, since: float | None = None
) -> PeerCredentials:
    """What a transport hands over: the kernel's view of the connection's peer (the bus's
    pid, no pidfd: the fallback this machine's bus needs)."""
    return PeerCredentials(
        uid=uid, gids=frozenset({GID, 3000}), pid=pid, sender=sender, since=since
    )


def test_a_process_outside_any_job_is_held_by_pid_and_start_time(ident, proc):
    proc.add(500, 1, start=1234, comm="my (odd) prog")
    caller = ident.caller(peer(500))
    assert caller.holder == Holder.for_process(NODE, 500, 1234)
    assert (caller.uid, caller.gid, caller.pid, caller.job) == (UID, GID, 500, 0)
    assert caller.gids == frozenset({GID, 3000})


def test_the_gid_is_the_processs_effective_gid(ident, proc):
    proc.add(500, 1, start=10, gid=4000)
    assert ident.caller(peer(500)).gid == 4000


def test_the_cgroup_decides_first(ident, proc, wlm):
    proc.add(500, 1, start=10)
    wlm.cgroup[500] = 42
    wlm.slurmd[500] = 99  # never asked: the cgroup answered
    caller = ident.caller(peer(500))
    assert caller.job == 42
    assert caller.holder == Holder.for_job(NODE, 42)
    assert wlm.asked == ["cgroup 500"]


def test_slurmd_is_asked_when_neither_cgroup_nor_registration_knows(ident, proc, wlm):
    proc.add(500, 1, start=10)
    wlm.slurmd[500] = 77
    assert ident.caller(peer(500)).job == 77
    assert wlm.asked == ["cgroup 500", "slurmd 500"]


def test_a_registered_tasks_descendants_are_in_its_job(ident, proc, wlm):
    proc.add(100, 1, start=50)  # the task the SPANK plugin registered
    proc.add(200, 100, start=60)  # a wrapper (sh, mpirun)
    proc.add(300, 200, start=70)  # the caller
    ident.register(100, 5)
    assert ident.caller(peer(300)).holder == Holder.for_job(NODE, 5)
    assert "slurmd 300" not in wlm.asked


def test_a_reused_pid_is_not_the_registered_task(ident, proc):
    proc.add(100, 1, start=50)
    ident.register(100, 5)
    proc.exit(100)
    proc.add(100, 1, start=80)  # the pid, reused by another process
    assert ident.caller(peer(100)).job == 0


def test_the_walk_stops_at_an_ancestor_younger_than_its_child(ident, proc):
    """A parent that started after its child means the chain crossed a pid reuse."""
    proc.add(100, 1, start=50)
    ident.register(100, 5)
    proc.add(300, 100, start=40)  # "child" older than its parent: 100 was reused
    assert ident.caller(peer(300)).job == 0


def test_registering_an_exited_pid_is_refused(ident, proc):
    with pytest.raises(DrcError, match="pid 999 does not exist"):
        ident.register(999, 5)
    assert ident.registered == {}


def test_a_caller_that_exited_before_identification_is_refused(ident, proc):
    with pytest.raises(DrcError, match="has exited"):
        ident.caller(peer(999))


def test_a_pid_now_run_by_another_user_is_refused_and_nothing_is_looked_up(ident, proc, wlm):
    """The connection is uid 2001's; pid 500 now belongs to uid 1001's task of job 101."""
    proc.add(500, 1, start=10, uid=(1001, 1001))
    wlm.cgroup[500] = 101
    with pytest.raises(DrcError, match="pid was reused") as refused:
        ident.caller(peer(500))
    assert refused.value.code.name == "EPERM"
    assert wlm.asked == []  # refused before the job of the pid's new owner was read


def test_a_root_process_acting_as_the_user_is_accepted(ident, proc):
    """slurmstepd in SPANK user_init: real uid 0, effective uid the job's user."""
    proc.add(500, 1, start=10, uid=(0, UID))
    assert ident.caller(peer(500)).uid == UID
    proc.add(501, 1, start=10, uid=(UID, 0))  # the reverse is another user's process
    with pytest.raises(DrcError, match="pid was reused"):
        ident.caller(peer(501))


def test_a_same_user_process_started_after_the_connection_appeared_is_refused(ident, proc):
    ticks = drc.procfs.CLOCK_TICKS
    proc.add(500, 1, start=10 * ticks + 1)  # one tick after the connection appeared (t=10 s)
    with pytest.raises(DrcError, match="started after bus connection"):
        ident.caller(peer(500, since=10.0))
    proc.add(501, 1, start=10 * ticks)  # the same tick: older or as old as the connection
    assert ident.caller(peer(501, since=10.0)).pid == 501


def test_a_connections_caller_is_reused_within_the_ttl_then_looked_up_again(
    ident, proc, wlm, monkeypatch
):
    now = [1000.0]
    monkeypatch.setattr(drc.node.caller.time, "monotonic", lambda: now[0])
    proc.add(500, 1, start=10)
    first = ident.caller(peer(500))
    wlm.asked.clear()
    assert ident.caller(peer(500)) is first
    assert wlm.asked == []  # the hot path: nothing read again
    # Another connection of the same process is another key.
    ident.caller(peer(500, sender=":1.6"))
    now[0] += drc.node.caller.CALLER_TTL
    wlm.cgroup[500] = 42  # e.g. adopted into a job meanwhile (the job lookup is remembered)
    again = ident.caller(peer(500))
    assert again is not first
    assert again.job == 0  # job_of remembers (pid, start) -> job until forget_*


def test_a_registration_invalidates_what_was_remembered_as_outside_any_job(
    ident, proc, monkeypatch
):
    """The registered task's own connections at once; its descendants' within CALLER_TTL
    (their job lookups are dropped, their connections' callers expire)."""
    now = [1000.0]
    monkeypatch.setattr(drc.node.caller.time, "monotonic", lambda: now[0])
    proc.add(100, 1, start=50)
    proc.add(300, 100, start=70)
    assert ident.caller(peer(100, sender=":1.7")).job == 0
    assert ident.caller(peer(300)).job == 0
    ident.register(100, 5)  # the plugin's hook ran after the first calls
    assert ident.caller(peer(100, sender=":1.7")).job == 5
    assert ident.job_of(300, 70) == 5
    now[0] += drc.node.caller.CALLER_TTL
    assert ident.caller(peer(300)).job == 5


def test_forget_job_drops_its_registrations_lookups_and_callers(ident, proc, wlm):
    proc.add(100, 1, start=50)
    ident.register(100, 5)
    assert ident.caller(peer(100)).job == 5
    ident.forget_job(5)
    assert ident.registered == {}
    assert ident.caller(peer(100)).job == 0  # asked afresh, and no longer registered


def test_forget_process_drops_its_registration_and_lookup(ident, proc):
    proc.add(100, 1, start=50)
    ident.register(100, 5)
    assert ident.job_of(100, 50) == 5
    ident.forget_process(100, 50)
    assert ident.registered == {}
    assert ident.job_of(100, 50) == 0


def test_remembered_lookups_and_callers_are_bounded(ident, proc, monkeypatch):
    monkeypatch.setattr(drc.node.caller, "MAX_REMEMBERED", 3)
    for pid in range(500, 506):
        proc.add(pid, 1, start=pid)
        ident.caller(peer(pid, sender=f":1.{pid}"))
    assert len(ident._jobs) == 3
    assert len(ident._callers) == 3
    assert list(ident._jobs) == [(503, 503), (504, 504), (505, 505)]  # oldest went first
