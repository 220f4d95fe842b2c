"""DRCC's CXI service manager: the node half of the ``slingshot`` provider.

For an access DRCS admitted, DRCC makes one CXI service per (credential, member uid, NIC):
``restricted_members`` = that uid, ``restricted_vnis`` = the credential's VNI,
``restricted_tcs`` and resource limits from ``[slingshot]``. Services are reused by later
accesses of the same member and destroyed when the last holder they serve goes.

Why always a uid member, even for a group grant: libcxi checks the *effective* uid and the
*primary* gid only, so a gid member would let in every process whose primary group it is and
shut out members through supplementary groups. Each user reaching a credential through a group
grant therefore gets a service of their own.

Every input (credential, VNI, member uid) comes from DRCS's answer, which the DRC link carries
MUNGE-signed by DRCS; nothing a client sends reaches a service descriptor.

Durability comes from the NIC itself: services outlive DRCC. :meth:`reconcile` (at start,
after every holder change, periodically) asks DRCS which of drc's credentials still have
references on this node, destroys every service in drc's VNI range that none explains
(never service 1 or a VNI outside the range: Slurm's and the default service), retries
``-EBUSY`` with backoff, and confirms to DRCS the freed credentials that have no service left,
so their VNI can go back to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from drc.core.errors import Code, DrcError, eperm
from drc.core.model import Holder, HolderKind
from drc.export import exported
from drc.node.cxi import RESOURCES, TRAFFIC_CLASSES, CxiError, LibCxi, service_desc
from drc.nodeverbs import NodeVerbs

# DRCS's verbs by their declared names.
_STATE = exported(NodeVerbs.node_slingshot_state).name
_CLEANED = exported(NodeVerbs.node_slingshot_cleaned).name

log = logging.getLogger("drc.node.slingshot")

DESTROY_BACKOFF_MAX = 300.0


@dataclass(frozen=True)
class Settings:
    nics: tuple[int, ...]
    nic_names: tuple[str, ...]
    vni_min: int
    vni_max: int
    traffic_classes: tuple[str, ...]
    limits: Mapping[str, tuple[int, int]]
    libcxi: str = "libcxi.so.1"
    destroy_retry_interval: float = 1.0
    reconcile_interval: float = 30.0

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> Settings:
        """Validated ``[slingshot]`` keys; ValueError names the bad one."""
        names = tuple(section["nics"])
        nics = []
        for name in names:
            if not isinstance(name, str) or not name.startswith("cxi") or not name[3:].isdigit():
                raise ValueError(f"[slingshot] nics: {name!r} is not a CXI device name (cxiN)")
            nics.append(int(name[3:]))
        tcs = tuple(section["traffic_classes"])
        for tc in tcs:
            if tc not in TRAFFIC_CLASSES:
                raise ValueError(
                    f"[slingshot] traffic_classes: unknown {tc!r} "
                    f"(known: {', '.join(TRAFFIC_CLASSES)})"
                )
        limits: dict[str, tuple[int, int]] = {}
        for item in section["limits"]:
            name, _, value = str(item).partition("=")
            maximum, _, reserved = value.partition(":")
            if name not in RESOURCES or not maximum.isdigit() or not (reserved or "0").isdigit():
                raise ValueError(
                    f"[slingshot] limits: {item!r} is not NAME=MAX:RESERVED "
                    f"(NAME one of {', '.join(RESOURCES)})"
                )
            limits[name] = (int(maximum), int(reserved or 0))
        return cls(
            nics=tuple(nics),
            nic_names=names,
            vni_min=section["vni_min"],
            vni_max=section["vni_max"],
            traffic_classes=tcs,
            limits=limits,
            libcxi=section["libcxi"],
            destroy_retry_interval=float(section["destroy_retry_interval"]),
            reconcile_interval=float(section["reconcile_interval"]),
        )


@dataclass
class _Doomed:
    """A service to destroy that libcxi refused so far (``-EBUSY``: traffic still drains)."""

    credential: int
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""


@dataclass
class _Svc:
    svc_id: int
    credential: int
    uid: int
    vni: int
    made: int  # generation: reconcile never destroys what was made after it asked DRCS
    holders: set[Holder] = field(default_factory=set)


class CxiServices:
    """The CXI services drc made on this node, per (credential, member uid, NIC)."""

    def __init__(
        self,
        node: str,
        settings: Settings,
        upstream: Any,
        lib: LibCxi | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.node, self.settings, self.upstream, self.clock = node, settings, upstream, clock
        self.lib = lib or LibCxi(settings.libcxi)
        self.devs = {nic: self.lib.open(nic) for nic in settings.nics}
        self.services: dict[tuple[int, int, int], _Svc] = {}  # (credential, uid, nic)
        self.doomed: dict[tuple[int, int], _Doomed] = {}  # (nic, svc_id)
        self._generation = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._lock = asyncio.Lock()
        self.counters = {"services_created": 0, "services_destroyed": 0, "destroy_busy": 0}

    def close(self) -> None:
        for dev in self.devs.values():
            self.lib.close(dev)
        self.devs.clear()

    # -- accesses -------------------------------------------------------------------------

    def ensure(self, info: Mapping[str, Any], uid: int, holder: Holder) -> list[int]:
        """Services for an access DRCS admitted (``info`` is its signed answer); svc ids by NIC.

        ``uid`` is the caller DRCC identified from the kernel; DRCS's signed ``member_uid``
        must match it, so neither a client nor a confused request can aim a service elsewhere.
        """
        credential, vni, member = info["credential"], info.get("vni"), info.get("member_uid")
        if not isinstance(vni, int) or not self.settings.vni_min <= vni <= self.settings.vni_max:
            raise DrcError(
                Code.CRED_EXTERNAL_FAILURE,
                f"DRCS answered VNI {vni!r} for credential {credential}, outside this node's "
                f"[slingshot] range {self.settings.vni_min}..{self.settings.vni_max}: "
                "DRCS and DRCC configs disagree",
            )
        if member != uid:
            raise eperm(
                f"DRCS admitted uid {member!r}, not the caller's uid {uid}: no CXI service made"
            )
        ids = []
        for nic in self.settings.nics:
            key = (credential, uid, nic)
            svc = self.services.get(key)
            if svc is None:
                svc = self._create(credential, uid, vni, nic)
                self.services[key] = svc
            svc.holders.add(holder)
            ids.append(svc.svc_id)
        return ids

    def known(self, credential: int, uid: int) -> list[int] | None:
        """svc ids by NIC of a member's services, None unless every NIC has one."""
        found = [self.services.get((credential, uid, nic)) for nic in self.settings.nics]
        return None if None in found else [s.svc_id for s in found if s is not None]

    def _create(self, credential: int, uid: int, vni: int, nic: int) -> _Svc:
        s = self.settings
        desc = service_desc(vni, uid, list(s.traffic_classes), dict(s.limits))
        try:
            svc_id = self.lib.alloc_svc(self.devs[nic], desc)
        except CxiError as e:
            hint = ""
            if e.errno == errno.EEXIST:
                hint = " (this CXI driver refuses two services on one VNI: update it)"
            elif e.errno == errno.ENOSPC:
                hint = " (NIC resources exhausted: lower [slingshot] limits)"
            raise DrcError(
                Code.CRED_EXTERNAL_FAILURE,
                f"cannot make a CXI service on cxi{nic} for VNI {vni}, uid {uid}: {e}{hint}",
            ) from None
        self.counters["services_created"] += 1
        log.info(
            "cxi%d: service %d for credential %d, VNI %d, uid %d", nic, svc_id, credential, vni, uid
        )
        return _Svc(svc_id, credential, uid, vni, next(self._generation))

    # -- holders going --------------------------------------------------------------------

    def drop_holder(self, credential: int | None, holder: Holder) -> None:
        """A reference went (release of ``credential``; or job end / process exit: all)."""
        for key, svc in list(self.services.items()):
            if credential is not None and svc.credential != credential:
                continue
            svc.holders.discard(holder)
            if not svc.holders:
                self._doom(key)
        self.wake()

    def drop_job(self, job: int) -> None:
        self.drop_where(lambda h: h.kind is HolderKind.JOB and h.job == job)

    def drop_process(self, pid: int, start: int) -> None:
        self.drop_where(lambda h: h.kind is HolderKind.PROCESS and (h.pid, h.start) == (pid, start))

    def drop_where(self, gone: Callable[[Holder], bool]) -> None:
        for key, svc in list(self.services.items()):
            if any(gone(h) for h in svc.holders):
                svc.holders = {h for h in svc.holders if not gone(h)}
                if not svc.holders:
                    self._doom(key)
        self.wake()

    def _doom(self, key: tuple[int, int, int]) -> None:
        svc = self.services.pop(key)
        self.doomed.setdefault((key[2], svc.svc_id), _Doomed(svc.credential))

    def wake(self) -> None:
        self._wakeup.set()

    # -- destroy and reconcile ------------------------------------------------------------

    def destroy_due(self) -> int:
        """Try the doomed services whose retry is due; how many remain."""
        now = self.clock()
        for (nic, svc_id), d in list(self.doomed.items()):
            if d.next_try > now:
                continue
            try:
                self.lib.destroy_svc(self.devs[nic], svc_id)
            except CxiError as e:
                if e.errno == errno.EINVAL and not self._exists(nic, svc_id):
                    del self.doomed[(nic, svc_id)]  # already gone (an admin destroyed it)
                    continue
                d.attempts += 1
                d.last_error = str(e)
                base = self.settings.destroy_retry_interval
                d.next_try = now + min(base * 2 ** (d.attempts - 1), DESTROY_BACKOFF_MAX)
                self.counters["destroy_busy"] += e.errno == errno.EBUSY
                log.warning(
                    "cxi%d: service %d of credential %d not destroyed (attempt %d, will retry): %s",
                    nic,
                    svc_id,
                    d.credential,
                    d.attempts,
                    e,
                )
                continue
            del self.doomed[(nic, svc_id)]
            self.counters["services_destroyed"] += 1
            log.info("cxi%d: destroyed service %d of credential %d", nic, svc_id, d.credential)
        return len(self.doomed)

    def _exists(self, nic: int, svc_id: int) -> bool:
        return any(s.svc_id == svc_id for s in self.lib.services(self.devs[nic]))

    def _ours(self, vnis: tuple[int, ...]) -> bool:
        s = self.settings
        return bool(vnis) and all(s.vni_min <= v <= s.vni_max for v in vnis)

    async def reconcile(self) -> None:
        """Make the NICs match DRCS: see the module docstring. Raises DrcError if unreachable."""
        async with self._lock:
            asked = next(self._generation)
            live, owed = (await self.upstream.call(_STATE, [self.node]))[0]
            live_vni = {c: v for c, v in live}
            for key, svc in list(self.services.items()):
                if svc.made < asked and live_vni.get(svc.credential) != svc.vni:
                    self._doom(key)
            mine = {(nic, s.svc_id) for (_, _, nic), s in self.services.items()}
            by_vni = {v: c for c, v in live}
            owed_vni = {v: c for c, v in owed}
            for nic, dev in self.devs.items():
                for found in self.lib.services(dev):
                    if found.svc_id == 1 or not self._ours(found.vnis):
                        continue  # the default service, Slurm's, anybody else's: never touched
                    if (nic, found.svc_id) in mine or (nic, found.svc_id) in self.doomed:
                        continue
                    vni = found.vnis[0]
                    credential = by_vni.get(vni)
                    if credential is not None and found.uids:
                        # Made by an earlier DRCC for a credential still referenced: adopt it.
                        self.services[(credential, found.uids[0], nic)] = _Svc(
                            found.svc_id, credential, found.uids[0], vni, 0
                        )
                        continue
                    log.info(
                        "cxi%d: service %d (VNI %d) is explained by no live reference: destroying",
                        nic,
                        found.svc_id,
                        vni,
                    )
                    self.doomed[(nic, found.svc_id)] = _Doomed(owed_vni.get(vni, 0))
            self.destroy_due()
            await self._confirm(owed)

    async def _confirm(self, owed: list[tuple[int, int]]) -> None:
        """Tell DRCS which freed credentials have no service left on this node."""
        if not owed:
            return
        left: set[int] = set()
        for dev in self.devs.values():
            for found in self.lib.services(dev):
                if found.svc_id != 1 and self._ours(found.vnis):
                    left.update(found.vnis)
        done = [c for c, v in owed if v not in left]
        if done:
            confirmed = (await self.upstream.call(_CLEANED, [self.node, done]))[0]
            log.info("confirmed CXI cleanup of credential(s) %s to DRCS", confirmed)

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Reconcile when woken (holder changes, frees) or every ``reconcile_interval``;
        sooner while destroys wait for their retry."""
        while not stopping():
            wait = self.settings.reconcile_interval
            if self.doomed:
                due = min(d.next_try for d in self.doomed.values()) - self.clock()
                wait = max(0.05, min(wait, due))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), wait)
            self._wakeup.clear()
            try:
                await self.reconcile()
            except DrcError as e:
                log.warning("CXI service reconcile postponed: %s", e)
                await asyncio.sleep(1)
            except Exception:
                log.exception("CXI service reconcile failed; retrying")
                await asyncio.sleep(1)

    def describe(self) -> dict[str, int]:
        return {
            **self.counters,
            "services": len(self.services),
            "destroys_pending": len(self.doomed),
        }
