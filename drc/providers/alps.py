"""The ``alps`` provider: one ALPS protection domain (pdomain) per credential.

A credential's network resources are those of a pdomain DRCS creates with
``apmgr pdomain -c NAME`` and removes with ``apmgr pdomain -r NAME``; its cookies (and, on
Gemini, its ptag) are read back from ``apstat -P``, the documented listing of protection
domains::

    PDomainID   Type    Uid     Cookie      Cookie2        (Aries: two cookies, no ptag)
    drc17       system  0       0xa92c0000  0xa92d0000

    PDomainID   Type    Uid     Ptag        Cookie         (Gemini: ptag and one cookie)
    drc17       system  0       253         0xec6a0000

DRCS runs as root, so its pdomains are *system* pdomains (no ``-u``): usable by any uid, with
access decided by DRC's grants rather than by ALPS's per-user pdomains.

Guarantees, the same as the pool's: at most ``max_pdomains`` credentials at once (a slot of the
store, claimed in the verb's transaction, so concurrent acquires never exceed it) and a pdomain
name (prefix + credential id) never held twice while alive. What the pool does not have: an
object outside the store. Creation happens in :meth:`allocate` inside the acquire transaction;
the core removes it again if that transaction fails (the ``leftover`` of an ExternalFailure
raised after the create may have succeeded). Removal is :meth:`release_external`, which the
core calls only after the freeing transaction committed, from a durable pending-cleanup row,
retrying until it works.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from drc.core.errors import Code, DrcError
from drc.core.model import UINT32_MAX, Resources
from drc.core.ports import ExternalFailure, ExternalObjects, SlotAllocator

log = logging.getLogger(__name__)

POOL = "alps"
#: What ALPS accepts as a pdomain name, kept conservative: it is also a command argument.
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,30}$")


class ApstatError(Exception):
    """``apstat -P`` could not be run or its output was not understood."""


@dataclass(frozen=True)
class PDomain:
    """One line of ``apstat -P``."""

    name: str
    type: str
    uid: int
    cookie1: int
    cookie2: int = 0
    ptag: int = 0


def parse_apstat_p(stdout: str) -> dict[str, PDomain]:
    """Protection domains by name from ``apstat -P`` output, Aries or Gemini layout.

    Columns are found by the header (``PDomainID``, ``Type``, ``Uid``, ``Cookie``, and
    ``Cookie2`` or ``Ptag``), case-insensitively. A line that does not fit the header raises
    ApstatError: a half-understood listing must not decide what a credential's cookie is, or
    whether a pdomain is gone.
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return {}
    header = [h.lower() for h in lines[0].split()]
    if not header or header[0] != "pdomainid" or "cookie" not in header:
        raise ApstatError(f"apstat -P: unexpected header {lines[0].strip()!r}")
    col = {name: i for i, name in enumerate(header)}
    found: dict[str, PDomain] = {}
    for line in lines[1:]:
        fields = line.split()
        if len(fields) != len(header):
            raise ApstatError(f"apstat -P: line not understood: {line.strip()!r}")
        try:
            pd = PDomain(
                name=fields[col["pdomainid"]],
                type=fields[col["type"]] if "type" in col else "",
                uid=int(fields[col["uid"]]) if "uid" in col else 0,
                cookie1=int(fields[col["cookie"]], 0),
                cookie2=int(fields[col["cookie2"]], 0) if "cookie2" in col else 0,
                ptag=int(fields[col["ptag"]], 0) if "ptag" in col else 0,
            )
        except ValueError as e:
            raise ApstatError(f"apstat -P: line not understood: {line.strip()!r}") from e
        found[pd.name] = pd
    return found


def _clean_env() -> dict[str, str]:
    """The C locale keeps ALPS's messages and number formats parseable."""
    return {**os.environ, "LC_ALL": "C"}


@dataclass(frozen=True)
class AlpsProvider:
    """Credentials backed by ALPS protection domains (see the module docstring)."""

    apmgr: str = "apmgr"
    apstat: str = "apstat"
    timeout: float = 30.0
    pdomain_prefix: str = "drc"
    max_pdomains: int = 256
    cleanup_retry_interval: float = 60.0
    name: str = "alps"
    features: ClassVar[tuple[type, ...]] = (ExternalObjects,)

    def __post_init__(self) -> None:
        if not 1 <= self.max_pdomains <= UINT32_MAX:
            raise ValueError("alps: max_pdomains must be >= 1")
        if not _NAME_RE.match(f"{self.pdomain_prefix}{UINT32_MAX}"):
            raise ValueError(
                f"alps: pdomain_prefix {self.pdomain_prefix!r} must start with a letter and "
                "hold only letters, digits, '_', '.', '-' (at most 21 characters)"
            )
        if self.timeout <= 0 or self.cleanup_retry_interval <= 0:
            raise ValueError("alps: timeout and cleanup_retry_interval must be > 0")

    @classmethod
    def from_settings(cls, settings: Mapping[str, object]) -> AlpsProvider:
        """From the ``[alps]`` config section (which also holds the WLM adapter's keys)."""
        keys = ("apmgr", "apstat", "pdomain_prefix", "max_pdomains")
        kwargs: dict[str, object] = {k: settings[k] for k in keys if k in settings}
        if "timeout" in settings:
            kwargs["timeout"] = float(settings["timeout"])  # type: ignore[arg-type]
        if "cleanup_retry_interval" in settings:
            kwargs["cleanup_retry_interval"] = float(settings["cleanup_retry_interval"])  # type: ignore[arg-type]
        return cls(**kwargs)  # type: ignore[arg-type]

    # -- commands --------------------------------------------------------------------------

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Run an ALPS command; OSError and TimeoutExpired propagate to the caller."""
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            env=_clean_env(),
            check=False,
        )

    def pdomains(self) -> dict[str, PDomain]:
        """Every protection domain ALPS knows (``apstat -P``). Raises ApstatError."""
        try:
            proc = self._run([self.apstat, "-P"])
        except (OSError, subprocess.TimeoutExpired) as e:
            raise ApstatError(f"apstat -P: {e}") from e
        if proc.returncode != 0:
            raise ApstatError(
                f"apstat -P failed: {proc.stderr.strip() or f'exit status {proc.returncode}'}"
            )
        return parse_apstat_p(proc.stdout)

    def pdomain_name(self, credential: int) -> str:
        return f"{self.pdomain_prefix}{credential}"

    # -- the provider interface ------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.max_pdomains

    def allocate(self, credential: int, slots: SlotAllocator) -> Resources:
        """Claim a slot, create the pdomain, read its cookies back. Inside the transaction."""
        slot = slots.claim_slot(POOL, self.max_pdomains)
        if slot is None:
            raise DrcError(
                Code.ENOSPC,
                f"all {self.max_pdomains} pdomain-backed credentials are in use "
                "([alps] max_pdomains)",
            )
        name = self.pdomain_name(credential)
        data = json.dumps({"slot": slot, "pdomain": name}, separators=(",", ":"))
        # What to remove should anything below fail after apmgr may have created it.
        placeholder = Resources(self.name, 0, 0, 0, data)
        cmd = f"{self.apmgr} pdomain -c {name}"
        try:
            proc = self._run([self.apmgr, "pdomain", "-c", name])
        except subprocess.TimeoutExpired:
            raise _external(
                f"{cmd}: no answer within {self.timeout:.0f} s", leftover=placeholder
            ) from None
        except OSError as e:
            raise _external(f"{cmd}: {e}") from None
        if proc.returncode != 0:
            detail = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
            raise _external(f"{cmd} failed: {detail}")
        try:
            pd = self.pdomains().get(name)
        except ApstatError as e:
            raise _external(f"pdomain {name} created but {e}", leftover=placeholder) from None
        if pd is None or not pd.cookie1:
            raise _external(
                f"pdomain {name} created but apstat -P does not list it with a cookie",
                leftover=placeholder,
            )
        log.info(
            "created pdomain %s for credential %d: cookies 0x%x 0x%x ptag %d",
            name,
            credential,
            pd.cookie1,
            pd.cookie2,
            pd.ptag,
        )
        return Resources(self.name, pd.cookie1, pd.cookie2, pd.ptag, data)

    def free(self, resources: Resources, slots: SlotAllocator) -> None:
        """The store side only: the slot. The pdomain goes in :meth:`release_external`."""
        slots.return_slot(POOL, int(_data(resources)["slot"]))

    def release_external(self, resources: Resources) -> None:
        """``apmgr pdomain -r NAME``; a pdomain that is already gone counts as removed.

        Raises RuntimeError (with ALPS's message) when the pdomain is still there afterwards,
        e.g. because an application still uses it: the core records it and retries.
        """
        name = str(_data(resources)["pdomain"])
        cmd = f"{self.apmgr} pdomain -r {name}"
        try:
            proc = self._run([self.apmgr, "pdomain", "-r", name])
        except (OSError, subprocess.TimeoutExpired) as e:
            raise RuntimeError(f"{cmd}: {e}") from e
        if proc.returncode == 0:
            log.info("removed pdomain %s", name)
            return
        detail = proc.stderr.strip() or proc.stdout.strip() or f"exit {proc.returncode}"
        try:
            still_there = name in self.pdomains()
        except ApstatError as e:
            raise RuntimeError(f"{cmd} failed ({detail}) and {e}") from e
        if still_there:
            raise RuntimeError(f"{cmd} failed: {detail}")
        log.info("pdomain %s was already gone (%s)", name, detail)

    def describe_external(self, resources: Resources) -> str:
        return f"pdomain {_data(resources).get('pdomain', '?')}"

    def describe(self, slots: SlotAllocator) -> dict[str, object]:
        used = slots.slots_in_use(POOL)
        return {
            "name": self.name,
            "ptag": 0,  # per pdomain, as apstat -P reports it (Gemini), else 0
            "pdomain_prefix": self.pdomain_prefix,
            "cookies_per_credential": 2,
            "capacity": self.max_pdomains,
            "allocated": used,
            "free": self.max_pdomains - used,
        }


def _data(resources: Resources) -> dict[str, object]:
    try:
        data = json.loads(resources.data)
    except ValueError:
        data = None
    if not isinstance(data, dict) or "pdomain" not in data or "slot" not in data:
        raise ValueError(f"not the data of an alps credential: {resources.data!r}")
    return data


def _external(message: str, leftover: Resources | None = None) -> ExternalFailure:
    """CRED_EXTERNAL_FAILURE, naming what may exist outside (see ExternalObjects)."""
    log.warning("%s", message)
    return ExternalFailure(message, leftover)
