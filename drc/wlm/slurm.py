"""Slurm adapter: which job a process is in, and which jobs Slurm still considers alive.

pid -> job, from sources a user cannot forge (DESIGN section 4):

1. the process's cgroup, written by slurmstepd (proctrack/cgroup, task/cgroup), parsed *anchored*
   at the Slurm root (:meth:`SlurmAdapter.job_from_cgroup`): with cgroup v1 the step directory
   belongs to the user, who can create ``.../step_0/job_999`` inside it and move there, so only
   the first job component counts.
2. the pid -> job registration made by the SPANK ``task_post_fork`` hook (root, in slurmstepd).
   DRCC keeps that table, so it is not here: DRCC calls the two lookups of this adapter
   separately and tries its registration between them, i.e. before asking slurmd.
3. slurmd, via ``scontrol pidinfo`` (:meth:`SlurmAdapter.job_from_slurmd`; proctrack finds the
   pid among the job's processes). Covers proctrack/linuxproc, where /proc/PID/cgroup says
   nothing. It misses a ``setsid`` child reparented to init, and needs slurmctld too (pidinfo
   also asks for the job's end time), so it comes last and costs a process per lookup.

:meth:`SlurmAdapter.job_of_pid` is 1 then 3, for callers without a registration table.
``SLURM_JOB_ID`` in the process's environment is never read: the user sets it.

Active jobs (for DRCJEDI): pyslurm when it imports and was built for the installed Slurm
major.minor (PyPI only has 17.11, 18.8 and 25.11, which refuse other Slurm versions), else
``squeue``. Either way a failure raises WlmError: an empty list would expire every job.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

from drc.wlm.base import WlmError

log = logging.getLogger(__name__)

#: Job states after which Slurm will not run the job again. Anything else (PENDING, RUNNING,
#: SUSPENDED, COMPLETING, CONFIGURING, REQUEUED, RESIZING, STOPPED, SIGNALING, STAGE_OUT,
#: states a newer Slurm invents...) counts as alive: keeping a dead job's credentials a little
#: longer is harmless, expiring a live job's is not.
TERMINAL_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "TIMEOUT",
    }
)

# cgroup v1: /slurm[_<node>]/uid_<uid>/job_<job>[/...] at the very start of the path. The
# hierarchy root is root's; everything below job_<job>/step_<n> may be the user's.
_V1_RE = re.compile(r"^/slurm[^/]*/uid_(\d+)/job_(\d+)(?:/|$)")

# cgroup v2: slurmd puts steps under its own scope, "slurmstepd.scope" (or "<node>_slurmstepd.scope"
# with several slurmd per node). Only accepted directly under the parents below: a systemd user
# manager's subtree (/user.slice/user-1001.slice/user@1001.service/...) is delegated to the user,
# who could build ".../slurmstepd.scope/job_999" there.
DEFAULT_V2_PARENTS: tuple[str, ...] = ("", "/system.slice")

# "Slurm JobId=226 ends at ..." in current releases (the 22.05 binary prints that); older ones
# printed "Slurm job id 226 ends at ...".
_PIDINFO_RE = re.compile(r"^Slurm (?:JobId=|job id )(\d+) ends at", re.MULTILINE)
_VERSION_RE = re.compile(r"(\d+)\.(\d+)")


def parse_cgroup_v1_path(path: str) -> tuple[int, int] | None:
    """(uid, job) from a cgroup v1 path below the Slurm root, else None.

    >>> parse_cgroup_v1_path("/slurm_n1/uid_1001/job_226/step_0/job_999")
    (1001, 226)
    """
    m = _V1_RE.match(path)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _v2_regex(parents: Sequence[str]) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(p.rstrip("/")) for p in parents)
    return re.compile(rf"^(?:{alternatives})/(?:[^/]+_)?slurmstepd\.scope/job_(\d+)(?:/|$)")


_V2_DEFAULT_RE = _v2_regex(DEFAULT_V2_PARENTS)


def parse_cgroup_v2_path(path: str, parents: Sequence[str] = DEFAULT_V2_PARENTS) -> int | None:
    """The job from a cgroup v2 path in slurmd's ``slurmstepd.scope``, else None.

    >>> parse_cgroup_v2_path("/system.slice/slurmstepd.scope/job_226/step_0/user/task_0")
    226
    """
    rx = _V2_DEFAULT_RE if tuple(parents) == DEFAULT_V2_PARENTS else _v2_regex(parents)
    m = rx.match(path)
    return int(m.group(1)) if m else None


def parse_pidinfo(stdout: str) -> int | None:
    """The job id in ``scontrol pidinfo`` output ("Slurm JobId=226 ends at ..."), else None."""
    m = _PIDINFO_RE.search(stdout)
    return int(m.group(1)) if m else None


def parse_squeue(stdout: str) -> set[int]:
    """Alive job ids from ``squeue -h -o '%A %T'`` output ("226 RUNNING" per line).

    A line that is not "<id> <STATE>" raises WlmError: a half-understood list must not be used
    to expire jobs.
    """
    alive: set[int] = set()
    for lineno, line in enumerate(stdout.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not fields[0].isdigit():
            raise WlmError(f"squeue output line {lineno} not understood: {line!r}")
        job, state = int(fields[0]), fields[1].upper()
        if is_alive(state):
            alive.add(job)
    return alive


def is_alive(state: str | None) -> bool:
    """Whether a Slurm job state means the job may still run (unknown states count as alive).

    Accepts squeue's names ("RUNNING") and flagged forms ("RUNNING+CONFIGURING", "CANCELLED by 0").
    """
    if not state:
        return True
    base = re.split(r"[+\s]", state.strip().upper(), maxsplit=1)[0]
    return base not in TERMINAL_STATES


def parse_version(text: str) -> tuple[int, int] | None:
    """(major, minor) from "slurm 22.05.8", "slurm-wlm 22.05.8" (Debian), pyslurm's "22.5.1"..."""
    m = _VERSION_RE.search(text)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _clean_env() -> dict[str, str]:
    """The environment for Slurm commands, without the variables that change what they report.

    SQUEUE_* (states, users, partitions, format) and SLURM_CLUSTERS/SLURM_TIME_FORMAT would change
    squeue's answer; the C locale keeps messages parseable.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SQUEUE_", "SCONTROL_"))
        and k not in ("SLURM_CLUSTERS", "SLURM_TIME_FORMAT")
    }
    env["LC_ALL"] = "C"
    return env


class SlurmAdapter:
    """The Slurm workload manager (see the module docstring for the sources and their order)."""

    name = "slurm"

    def __init__(
        self,
        *,
        scontrol: str = "scontrol",
        squeue: str = "squeue",
        proc_root: str | os.PathLike[str] = "/proc",
        pidinfo_timeout: float = 2.0,
        squeue_timeout: float = 30.0,
        use_pyslurm: bool = True,
        cgroup_v2_parents: Iterable[str] = DEFAULT_V2_PARENTS,
    ) -> None:
        """
        ``scontrol``/``squeue``: command names or paths. ``proc_root``: where /proc is (tests
        point it at a fake tree). ``pidinfo_timeout`` bounds each pid lookup, which DRCC makes
        while a caller waits; ``squeue_timeout`` bounds the active-job query (a busy slurmctld
        answers slowly). ``cgroup_v2_parents``: the cgroups under which slurmd's
        ``slurmstepd.scope`` may sit ("" is the root).
        """
        self.scontrol = scontrol
        self.squeue = squeue
        self.proc_root = Path(proc_root)
        self.pidinfo_timeout = pidinfo_timeout
        self.squeue_timeout = squeue_timeout
        self.use_pyslurm = use_pyslurm
        self.cgroup_v2_parents = tuple(cgroup_v2_parents)
        # Chosen on first use of active_jobs(): the pyslurm module, or None for squeue.
        self._backend: ModuleType | None = None
        self._backend_chosen = False

    # ---------------------------------------------------------------- pid -> job

    def job_of_pid(self, pid: int) -> int | None:
        """The job of a live process: its cgroup, else slurmd. None when in no job or unknown.

        DRCC does not call this: it tries its pid registration (made by the SPANK hook) between
        :meth:`job_from_cgroup` and :meth:`job_from_slurmd`.
        """
        job = self.job_from_cgroup(pid)
        if job is None:
            job = self.job_from_slurmd(pid)
        return job

    def job_from_cgroup(self, pid: int) -> int | None:
        """The job from /proc/PID/cgroup, anchored at Slurm's root; None if not in a Slurm cgroup.

        Every line (v1 hierarchy or v2 unified) that is below Slurm's root must name the same job,
        and v1's ``uid_N`` must be the process's real uid: anything inconsistent means the process
        was moved by hand, and the answer is None (so slurmd is asked instead).
        """
        if pid <= 0:
            return None
        try:
            text = (self.proc_root / str(pid) / "cgroup").read_text()
        except OSError:
            return None
        jobs: set[int] = set()
        uid: int | None = None
        for line in text.splitlines():
            parts = line.split(":", 2)
            if len(parts) != 3:
                continue
            hierarchy, controllers, path = parts
            if hierarchy == "0" and controllers == "":
                job = parse_cgroup_v2_path(path, self.cgroup_v2_parents)
                if job is not None:
                    jobs.add(job)
                continue
            found = parse_cgroup_v1_path(path)
            if found is None:
                continue
            job_uid, job = found
            if uid is None:
                uid = self._real_uid(pid)
            if uid != job_uid:
                log.warning(
                    "pid %d (uid %s) is in cgroup %s of uid %d: ignoring its cgroups",
                    pid,
                    uid,
                    path,
                    job_uid,
                )
                return None
            jobs.add(job)
        if len(jobs) > 1:
            log.warning("pid %d is in the cgroups of several jobs %s: ignoring them", pid, jobs)
            return None
        return jobs.pop() if jobs else None

    def _real_uid(self, pid: int) -> int | None:
        """The real uid of a process (the job owner's, even in a setuid program), or None."""
        try:
            for line in (self.proc_root / str(pid) / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def job_from_slurmd(self, pid: int) -> int | None:
        """The job slurmd says ``pid`` is in (``scontrol pidinfo``); None if none or on error.

        Errors (slurmd or slurmctld down, timeout, no scontrol) give None rather than raising:
        the caller then simply has no job-scoped rights, which is the safe side.
        """
        if pid <= 0:
            return None
        try:
            proc = subprocess.run(
                [self.scontrol, "pidinfo", str(pid)],
                capture_output=True,
                text=True,
                timeout=self.pidinfo_timeout,
                env=_clean_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            log.warning("scontrol pidinfo %d: no answer within %.1f s", pid, self.pidinfo_timeout)
            return None
        except OSError as e:
            log.warning("scontrol pidinfo %d: %s", pid, e)
            return None
        if proc.returncode != 0:
            # "Failed to locate job for requested pid" for a pid in no job (or slurmd down),
            # "Failed to get job end time: ..." when slurmctld cannot be reached.
            log.debug("scontrol pidinfo %d: %s", pid, proc.stderr.strip())
            return None
        return parse_pidinfo(proc.stdout)

    # ---------------------------------------------------------------- active jobs

    def active_jobs(self) -> set[int]:
        """Every job Slurm considers alive, all partitions and users. Raises WlmError on failure.

        Needs to run as root or SlurmUser where ``PrivateData=jobs`` hides others' jobs.
        """
        backend = self._choose_backend()
        if backend is not None:
            return self._active_jobs_pyslurm(backend)
        return self._active_jobs_squeue()

    def slurm_version(self) -> tuple[int, int] | None:
        """The installed Slurm's (major, minor), from ``scontrol --version``; None if unknown."""
        try:
            proc = subprocess.run(
                [self.scontrol, "--version"],
                capture_output=True,
                text=True,
                timeout=self.pidinfo_timeout,
                env=_clean_env(),
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            log.debug("scontrol --version: %s", e)
            return None
        if proc.returncode != 0:
            return None
        return parse_version(proc.stdout)

    def _choose_backend(self) -> ModuleType | None:
        """pyslurm if it imports and matches the installed Slurm, else None: squeue."""
        if self._backend_chosen:
            return self._backend
        module, reason = self._load_pyslurm()
        self._backend = module
        self._backend_chosen = True
        if module is not None:
            log.info("active Slurm jobs from pyslurm (%s)", reason)
        else:
            log.info("active Slurm jobs from %s (%s)", self.squeue, reason)
        return module

    def _load_pyslurm(self) -> tuple[ModuleType | None, str]:
        if not self.use_pyslurm:
            return None, "pyslurm disabled in configuration"
        try:
            module = importlib.import_module("pyslurm")
        except Exception as e:  # ImportError, or OSError/undefined symbols from a wrong libslurm
            return None, f"pyslurm does not import: {e}"
        version = getattr(module, "__version__", None)
        if not isinstance(version, str):
            try:
                version = str(module.version())
            except Exception:
                version = ""
        have = parse_version(version)
        want = self.slurm_version()
        if have is None or want is None:
            return None, f"cannot compare pyslurm {version or '?'} with the installed Slurm"
        if have != want:
            return None, f"pyslurm {version} does not match Slurm {want[0]}.{want[1]:02d}"
        return module, f"pyslurm {version} matches Slurm {want[0]}.{want[1]:02d}"

    @staticmethod
    def _active_jobs_pyslurm(pyslurm: ModuleType) -> set[int]:
        try:
            if hasattr(pyslurm, "Jobs"):  # the API of pyslurm >= 22.5: Jobs.load() -> id -> Job
                items = [
                    (int(job_id), getattr(job, "state", None))
                    for job_id, job in pyslurm.Jobs.load().items()
                ]
            else:  # the older API: job().get() -> {id: {"job_state": ...}}
                items = [
                    (int(job_id), info.get("job_state"))
                    for job_id, info in pyslurm.job().get().items()
                ]
        except Exception as e:  # pyslurm raises its own RPCError and plain ValueErrors
            raise WlmError(f"pyslurm could not list jobs: {e}") from e
        return {job_id for job_id, state in items if is_alive(state)}

    def _active_jobs_squeue(self) -> set[int]:
        # -a: hidden partitions too; -t all + our own filter: squeue's default state filter
        # differs between versions, ours is explicit (TERMINAL_STATES).
        cmd = [self.squeue, "-h", "-a", "-t", "all", "-o", "%A %T"]
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=self.squeue_timeout,
                env=_clean_env(),
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise WlmError(f"squeue: no answer within {self.squeue_timeout:.0f} s") from e
        except OSError as e:
            raise WlmError(f"squeue: {e}") from e
        if proc.returncode != 0:
            detail = proc.stderr.strip() or f"exit status {proc.returncode}"
            raise WlmError(f"squeue failed: {detail}")
        return parse_squeue(proc.stdout)
