"""Who is calling DRCC, and in which job — from the kernel and root-only sources only.

Order (DESIGN section 4): the job's cgroup (anchored parse), a pid→job registration made by a
root hook (the SPANK plugin's task_post_fork) of the process or of one of its ancestors (a task
under a wrapper: a shell, mpirun, strace), then slurmd (``scontrol pidinfo``). Outside any job
the holder is the process itself (pid and start time, since pids are reused).
Environment variables such as ``SLURM_JOB_ID`` are never read.

The process is the one that opened the caller's bus connection
(:func:`drc.procfs.connecting_process`), checked again after the job was looked up by its
pid: a connection whose process exited never inherits the job of the pid's next owner.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from drc.core.errors import einval, eperm
from drc.core.model import Caller, Holder
from drc.export import PeerCredentials
from drc.procfs import (
    connecting_process,
    process_parent,
    process_start_time,
    still_connecting_process,
)
from drc.wlm.base import WlmAdapter

MAX_REMEMBERED = 4096
#: How far up the process tree a registered task is looked for (wrappers nest a few deep).
MAX_ANCESTORS = 64
#: How long a connection's established identity is reused. Short, because a process can be
#: adopted into a job (pam_slurm_adopt) or registered after its first call.
CALLER_TTL = 5.0


class Identifier:
    def __init__(self, node: str, wlm: WlmAdapter) -> None:
        self.node = node
        self.wlm = wlm
        self.registered: dict[tuple[int, int], int] = {}  # (pid, start) -> job, from root hooks
        self._jobs: OrderedDict[tuple[int, int], int] = OrderedDict()  # lookups, bounded
        self._callers: OrderedDict[tuple[str, int], tuple[float, Caller]] = OrderedDict()

    def register(self, pid: int, job: int) -> None:
        """A root hook vouches that ``pid`` is a task of ``job``."""
        try:
            start = process_start_time(pid)
        except ProcessLookupError:
            raise einval(f"pid {pid} does not exist") from None
        self.registered[(pid, start)] = job
        self._jobs.pop((pid, start), None)
        # Descendants already looked up (as outside any job) are now in the job.
        for key in [k for k, j in self._jobs.items() if j == 0]:
            del self._jobs[key]
        for key in [k for k in self._callers if k[1] == pid]:
            del self._callers[key]

    def forget_job(self, job: int) -> None:
        for table in (self.registered, self._jobs):
            for key in [k for k, j in table.items() if j == job]:
                del table[key]
        for key in [k for k, (_, c) in self._callers.items() if c.job == job]:
            del self._callers[key]

    def forget_process(self, pid: int, start: int) -> None:
        self.registered.pop((pid, start), None)
        self._jobs.pop((pid, start), None)

    def job_of(self, pid: int, start: int) -> int:
        key = (pid, start)
        if key in self._jobs:
            self._jobs.move_to_end(key)
            return self._jobs[key]
        from_cgroup = getattr(self.wlm, "job_from_cgroup", None)
        from_slurmd = getattr(self.wlm, "job_from_slurmd", None)
        job = (from_cgroup(pid) if from_cgroup else None) or self.registered_ancestor(pid, start)
        if not job:
            job = (from_slurmd(pid) if from_slurmd else self.wlm.job_of_pid(pid)) or 0
        self._jobs[key] = job
        if len(self._jobs) > MAX_REMEMBERED:
            self._jobs.popitem(last=False)
        return job

    def registered_ancestor(self, pid: int, start: int) -> int:
        """The job of the nearest registered task among pid and its ancestors; 0 if none.

        Each ancestor is matched by (pid, start time) as registered, so a registered pid that
        exited and was reused is not matched. An ancestor must have started no later than its
        child: anything else means the chain was read across a pid reuse, and the walk stops.
        """
        if not self.registered:
            return 0
        for _ in range(MAX_ANCESTORS):
            job = self.registered.get((pid, start))
            if job:
                return job
            try:
                parent, own_start = process_parent(pid)
                if parent <= 1 or own_start != start:  # at init, or pid itself was reused
                    return 0
                _, parent_start = process_parent(parent)
            except (ProcessLookupError, OSError, ValueError, IndexError):
                return 0
            if parent_start > start:
                return 0
            pid, start = parent, parent_start
        return 0

    def caller(self, peer: PeerCredentials) -> Caller:
        """The caller behind a bus connection; reused for CALLER_TTL (the hot path)."""
        key = (peer.sender, peer.pid)
        now = time.monotonic()
        known = self._callers.get(key)
        # With the bus's pidfd a remembered answer also ends with its process (one syscall);
        # without it, it describes the exited process (never the pid's next owner) for the TTL.
        if (
            known is not None
            and now - known[0] < CALLER_TTL
            and (peer.process is None or peer.process.alive())
        ):
            return known[1]
        caller = self._identify(peer)
        self._callers[key] = (now, caller)
        self._callers.move_to_end(key)
        if len(self._callers) > MAX_REMEMBERED:
            self._callers.popitem(last=False)
        return caller

    def _identify(self, peer: PeerCredentials) -> Caller:
        proc = connecting_process(peer)
        job = self.job_of(proc.pid, proc.start)
        if not still_connecting_process(peer, proc):
            # It exited while its job was looked up by pid: forget what that lookup saw.
            self._jobs.pop((proc.pid, proc.start), None)
            raise eperm(
                f"the process that opened bus connection {peer.sender} (pid {proc.pid}) "
                "exited while it was being identified"
            )
        holder = (
            Holder.for_job(self.node, job)
            if job
            else Holder.for_process(self.node, proc.pid, proc.start)
        )
        return Caller(
            uid=peer.uid,
            gid=proc.gid,
            gids=peer.gids,
            pid=proc.pid,
            job=job,
            holder=holder,
        )
