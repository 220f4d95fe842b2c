"""ALPS adapter: which reservation a process is in, and which reservations ALPS still holds.

On an ALPS system DRC's job id is the ALPS **reservation id** (``ResId``): the batch system
creates one reservation per job and ALPS places every ``aprun`` of the job inside it.

pid -> reservation, from sources a user cannot forge (DESIGN section 4):

1. The **job container** of the process: the kernel job module (PAGG) puts the batch job's
   processes in a container at job start; children inherit it and a process cannot leave it.
   Cray's ``libjob`` answers ``job_getjid(pid)``, the same call Slurm's proctrack/cray uses.
2. The reservation bound to that container: the batch system CONFIRMs a reservation with the
   container id (BASIL ``pagg_id``), and ``apstat -r -v`` reports it in its detail section::

       Res[0]: apid 295, pagg 0x1c5e0000001, resId 190, user alice,

So ``job_of_pid`` is container id -> ``pagg`` -> ``resId``. Processes placed by a root hook are
covered by DRCC's registration table, which it tries first. ``BATCH_PARTITION_ID`` /
``BASIL_RESERVATION_ID`` in the environment are never read: the user sets them.

Active reservations (for DRCJEDI): the table of ``apstat -r``::

      ResId     ApId From            Arch PEs N d Memory State
    A  1450   571783 batch:138309      XT  80 - -   2000 conf,claim
        190      230 batch:102757      XT   2 2 2   1024 conf

(an ``A`` marks a reservation with a running application). Every listed reservation is alive,
whatever its state. Output that is empty, lacks the header or has a line that does not parse
raises WlmError: a half-understood list must not expire jobs.

Job end is event-driven: the ALPS epilog hook (``plugins/alps/drc-alps-epilog``) calls DRCC's
``JobEnded(resid)``; DRCJEDI's reconcile with this adapter catches what the hook missed.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
import threading
import time
from collections.abc import Mapping
from typing import Any

from drc.wlm.base import WlmError

log = logging.getLogger(__name__)

_DETAIL_RE = re.compile(
    r"^\s*Res\[\d+\]:\s*apid\s+(\d+),\s*pagg\s+(0[xX][0-9a-fA-F]+|\d+),\s*resId\s+(\d+)"
)
_NONE_RE = re.compile(r"^\s*no (resource )?reservations", re.IGNORECASE)
_JID_ERROR = (1 << 64) - 1  # (jid_t)-1
UINT32_MAX = 0xFFFF_FFFF


def parse_apstat_r(stdout: str) -> set[int]:
    """Reservation ids from the table of ``apstat -r`` (with or without ``-v``).

    The table starts at the line whose first column is ``ResId``; each row is an optional
    marker (``A``), the ResId and the ApId, then columns this adapter does not need. The
    ``-v`` detail section ends the table. Raises WlmError on anything else.
    """
    lines = stdout.splitlines()
    if not any(line.strip() for line in lines):
        raise WlmError("apstat -r printed nothing (not even its header)")
    reservations: set[int] = set()
    in_table = False
    for lineno, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if not in_table:
            if fields[0] == "ResId":
                in_table = True
            elif _NONE_RE.match(line):
                return set()
            else:
                raise WlmError(f"apstat -r line {lineno} is not its header: {line.strip()!r}")
            continue
        if line.strip().startswith("Reservation detail"):
            break
        if fields[0] in ("A", "*") or (fields[0].isalpha() and len(fields[0]) == 1):
            fields = fields[1:]
        if len(fields) < 3 or not fields[0].isdigit() or not fields[1].isdigit():
            raise WlmError(f"apstat -r line {lineno} not understood: {line.strip()!r}")
        resid = int(fields[0])
        if not 0 < resid <= UINT32_MAX:
            raise WlmError(f"apstat -r line {lineno}: reservation id {resid} out of range")
        reservations.add(resid)
    if not in_table:
        raise WlmError("apstat -r printed no reservation table")
    return reservations


def parse_apstat_r_detail(stdout: str) -> dict[int, int]:
    """Job container (``pagg``) -> reservation id, from the ``-v`` detail of ``apstat -r -v``.

    Containers 0 (a reservation not yet CONFIRMed with a container) are left out.
    """
    bound: dict[int, int] = {}
    for line in stdout.splitlines():
        m = _DETAIL_RE.match(line)
        if m:
            pagg, resid = int(m.group(2), 0), int(m.group(3))
            if pagg:
                bound[pagg] = resid
    return bound


def _clean_env() -> dict[str, str]:
    """apstat in the C locale; nothing else in its environment changes what it lists."""
    return {**os.environ, "LC_ALL": "C"}


class AlpsAdapter:
    """The ALPS workload manager (see the module docstring for the sources)."""

    name = "alps"

    def __init__(
        self,
        *,
        apstat: str = "apstat",
        libjob: str = "libjob.so.0",
        timeout: float = 30.0,
        lookup_timeout: float = 5.0,
        cache_seconds: float = 2.0,
    ) -> None:
        """
        ``apstat``: command name or path. ``libjob``: Cray's job-container library (name or
        path) providing ``job_getjid``. ``timeout`` bounds ``apstat -r`` for the active list;
        ``lookup_timeout`` bounds the ``apstat -r -v`` a pid lookup makes while a caller waits.
        ``cache_seconds``: how long one ``apstat -r -v`` answers pid lookups (a miss asks again,
        so a just-confirmed reservation is found at once).
        """
        self.apstat = apstat
        self.libjob = libjob
        self.timeout = timeout
        self.lookup_timeout = lookup_timeout
        self.cache_seconds = cache_seconds
        self._lock = threading.Lock()
        self._getjid: Any = None
        self._libjob_failed = False
        self._bound: dict[int, int] = {}
        self._bound_at = float("-inf")

    # ---------------------------------------------------------------- pid -> reservation

    def job_of_pid(self, pid: int) -> int | None:
        """The reservation of a live process: its job container, bound by ALPS to a ResId.

        None when the process is in no container, the container has no reservation, or ALPS
        cannot be asked (the caller then has no job-scoped rights: the safe side).
        """
        container = self.container_of(pid)
        if not container:
            return None
        with self._lock:
            fresh = time.monotonic() - self._bound_at < self.cache_seconds
            if not fresh or container not in self._bound:
                try:
                    self._bound = parse_apstat_r_detail(
                        self._apstat(["-r", "-v"], self.lookup_timeout)
                    )
                    self._bound_at = time.monotonic()
                except WlmError as e:
                    log.warning("pid %d: cannot map job container 0x%x: %s", pid, container, e)
                    return None
            return self._bound.get(container)

    def container_of(self, pid: int) -> int | None:
        """The job container id of ``pid`` (``job_getjid``); None if none or unknown."""
        if pid <= 0:
            return None
        getjid = self._load_getjid()
        if getjid is None:
            return None
        jid = int(getjid(pid))
        if jid in (0, _JID_ERROR):
            return None
        return jid

    def _load_getjid(self) -> Any:
        if self._getjid is not None or self._libjob_failed:
            return self._getjid
        try:
            fn = ctypes.CDLL(self.libjob).job_getjid
        except (OSError, AttributeError) as e:
            self._libjob_failed = True
            log.warning(
                "no job containers (%s: %s): only registered pids have a job", self.libjob, e
            )
            return None
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_uint64
        self._getjid = fn
        return fn

    # ---------------------------------------------------------------- active reservations

    def active_jobs(self) -> set[int]:
        """Every reservation ALPS holds (``apstat -r``). Raises WlmError on failure."""
        return parse_apstat_r(self._apstat(["-r"], self.timeout))

    def _apstat(self, args: list[str], timeout: float) -> str:
        cmd = " ".join([self.apstat, *args])
        try:
            proc = subprocess.run(
                [self.apstat, *args],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_clean_env(),
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise WlmError(f"{cmd}: no answer within {timeout:.0f} s") from e
        except OSError as e:
            raise WlmError(f"{cmd}: {e}") from e
        if proc.returncode != 0:
            raise WlmError(f"{cmd} failed: {proc.stderr.strip() or f'exit {proc.returncode}'}")
        return proc.stdout


def alps_settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """The adapter's keyword arguments from the ``[alps]`` config section.

    For daemons that build the adapter from configuration: ``make_wlm("alps",
    **alps_settings(cfg["alps"]))``.
    """
    settings: dict[str, Any] = {}
    for key in ("apstat", "libjob"):
        if key in section:
            settings[key] = section[key]
    if "timeout" in section:
        settings["timeout"] = float(section["timeout"])
    return settings
