"""What DRC needs from a workload manager (WLM), and the "no WLM" adapter.

Two questions only:

* ``job_of_pid`` — which job is this live process in? DRCC asks it for every caller, and the
  answer decides which job-scoped grants the caller gets, so it must come from sources the user
  cannot forge (the kernel's cgroup of the process, the WLM's own daemons), never from the
  process's environment (``SLURM_JOB_ID`` is whatever the user sets).
* ``active_jobs`` — which jobs does the WLM still consider alive? DRCJEDI reconciles DRCS's
  outstanding jobs against it at (re)start and expires the rest. An empty answer would expire
  *everything*, so a failure to ask must raise :class:`WlmError`, never look like "no jobs".
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class WlmError(Exception):
    """The WLM could not be asked (daemon down, command failed or timed out, bad output)."""


@runtime_checkable
class WlmAdapter(Protocol):
    """A workload manager as DRC sees it."""

    #: Short name, as in configuration ("slurm", "none", ...).
    name: str

    def job_of_pid(self, pid: int) -> int | None:
        """The job the live process ``pid`` belongs to; None when it is in no job (or unknown).

        Only unforgeable sources are used. The caller must check afterwards that the pid still
        names the same process (start time), since pids are reused.
        """
        ...

    def active_jobs(self) -> set[int]:
        """Ids of every job the WLM considers alive (pending, running, suspended, completing...).

        Raises WlmError when the WLM cannot be asked: never an empty set on error.
        """
        ...


class NoWlm:
    """No workload manager: no process is ever in a job, and there are no jobs to keep alive.

    Used on a laptop, in CI and by the embedded default, where only uid/gid grants make sense.
    """

    name = "none"

    def job_of_pid(self, pid: int) -> int | None:
        """Never in a job."""
        return None

    def active_jobs(self) -> set[int]:
        """No jobs: nothing job-scoped can be outstanding without a WLM."""
        return set()
