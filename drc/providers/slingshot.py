"""The ``slingshot`` provider: one HPE Slingshot VNI per credential, shared across jobs.

Server half (DRCS). VNIs come from an admin range ``[slingshot] vni_min..vni_max`` that must lie
outside Slurm's ``SwitchParameters vnis=`` range (``slurm_vni_min/max`` are checked when set).
A credential's resources are ``cookie1 = VNI`` (what ``drc_get_first_cookie`` answers on
Slingshot), ``cookie2 = ptag = 0``.

Life of a VNI, all in the store (migration 0005):

* **live**: claimed in the acquire transaction; never-used VNIs first, then the VNI free the
  longest (round-robin in effect), so a VNI just released is the last to come back.
* every node that serves an access records that it *owes* a cleanup of the VNI
  (:meth:`node_reference`, in the access transaction) before it builds CXI services;
* **cleanup**: the credential was freed (:meth:`free`, in the freeing transaction). The core's
  external-cleanup machinery (the ALPS pdomain one) keeps a pending row, visible in
  ``drccli status``, and calls :meth:`release_external`, which succeeds only once every owing
  node confirmed its services gone (``NodeSlingshotCleaned``) *and* the quarantine passed
  since the release or, when nodes confirmed, since the last confirmation;
* **free**: reusable. A VNI whose node cleanup is stuck (``-EBUSY`` for hours, a dead node)
  stays out of the pool: an admin frees it by fixing the node (see ``drc-slingshot(8)``).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, cast

from drc.core.errors import Code, DrcError
from drc.core.model import Credential, Resources
from drc.core.ports import (
    ExternalObjects,
    NodeObjects,
    NotYet,
    SlotAllocator,
    Store,
    StoreBound,
    Transaction,
)

log = logging.getLogger(__name__)

#: VNIs are 16 bits; 0 is invalid and 1 and 10 belong to the default CXI service.
VNI_MAX = 0xFFFF
RESERVED_VNIS = frozenset({1, 10})


class VniRows(Protocol):
    """What this provider needs of a store transaction: the VNI tables of migration 0005
    (``drc.store.vni``). The core never calls these; only the provider's hooks do."""

    def vni_claim(self, vni_min: int, vni_max: int, credential: int, now: float) -> int | None: ...
    def vni_release(self, vni: int, credential: int, now: float) -> None: ...
    def vni_finish(self, vni: int, credential: int, now: float) -> None: ...
    def vni_row(self, vni: int) -> tuple[int, str, float] | None: ...
    def vni_counts(self, vni_min: int, vni_max: int) -> dict[str, int]: ...
    def vni_owe(self, credential: int, vni: int, node: str) -> None: ...
    def vni_owing_nodes(self, credential: int) -> list[str]: ...
    def vni_node_state(self, node: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]: ...
    def vni_confirm(self, node: str, credentials: list[int], now: float) -> list[int]: ...


def _vnis(tx: object) -> VniRows:
    """The transaction as the VNI tables it also is (``drc.store`` mixes them in)."""
    return cast(VniRows, tx)


class SlingshotProvider:
    """Credentials backed by Slingshot VNIs (see the module docstring)."""

    name = "slingshot"
    features: ClassVar[tuple[type, ...]] = (ExternalObjects, StoreBound, NodeObjects)

    def __init__(
        self,
        vni_min: int = 61440,
        vni_max: int = 65535,
        quarantine: float = 60.0,
        cleanup_retry_interval: float = 10.0,
        slurm_vni_min: int = 0,
        slurm_vni_max: int = 0,
        clock: Any = None,
    ) -> None:
        if not 2 <= vni_min <= vni_max <= VNI_MAX:
            raise ValueError("slingshot: need 2 <= vni_min <= vni_max <= 65535")
        if any(vni_min <= v <= vni_max for v in RESERVED_VNIS):
            raise ValueError("slingshot: the range must not hold VNI 1 or 10 (default service)")
        if slurm_vni_min and not vni_max < slurm_vni_min and not vni_min > slurm_vni_max:
            raise ValueError(
                f"slingshot: VNIs {vni_min}..{vni_max} overlap Slurm's {slurm_vni_min}.."
                f"{slurm_vni_max} (SwitchParameters vnis=): shrink one of the two ranges"
            )
        if quarantine < 0 or cleanup_retry_interval <= 0:
            raise ValueError("slingshot: quarantine must be >= 0, cleanup_retry_interval > 0")
        self.vni_min, self.vni_max = vni_min, vni_max
        self.quarantine = float(quarantine)
        self.cleanup_retry_interval = float(cleanup_retry_interval)
        self.store: Store | None = None
        self.clock = clock or time.time

    @classmethod
    def from_settings(cls, settings: Mapping[str, object]) -> SlingshotProvider:
        """From ``[slingshot]`` (which also holds DRCC's keys: nics, libcxi, limits …)."""
        keys = ("vni_min", "vni_max", "slurm_vni_min", "slurm_vni_max")
        kwargs: dict[str, Any] = {k: settings[k] for k in keys if k in settings}
        for k in ("quarantine", "cleanup_retry_interval"):
            if k in settings:
                kwargs[k] = float(settings[k])  # type: ignore[arg-type]
        return cls(**kwargs)

    def bind_store(self, store: Store) -> None:
        """:meth:`release_external` reads node confirmations outside any verb's transaction."""
        self.store = store

    @property
    def capacity(self) -> int:
        return self.vni_max - self.vni_min + 1

    # -- the provider interface ------------------------------------------------------------

    def allocate(self, credential: int, slots: SlotAllocator) -> Resources:
        vni = _vnis(slots).vni_claim(self.vni_min, self.vni_max, credential, self.clock())
        if vni is None:
            counts = _vnis(slots).vni_counts(self.vni_min, self.vni_max)
            raise DrcError(
                Code.ENOSPC,
                f"no Slingshot VNI free in {self.vni_min}..{self.vni_max}: "
                f"{counts.get('live', 0)} held by credentials, {counts.get('cleanup', 0)} "
                "waiting for node cleanup or quarantine (drccli status lists them)",
            )
        data = json.dumps({"vni": vni, "credential": credential}, separators=(",", ":"))
        return Resources(self.name, vni, 0, 0, data)

    def free(self, resources: Resources, slots: SlotAllocator) -> None:
        """The VNI enters cleanup; :meth:`release_external` returns it to the pool."""
        d = _data(resources)
        _vnis(slots).vni_release(d["vni"], d["credential"], self.clock())

    # -- NodeObjects: the CXI services nodes build ------------------------------------------

    def node_reference(self, tx: Transaction, cred: Credential, node: str) -> None:
        """In the access transaction: ``node`` will build services and owe their removal."""
        if node and cred.resources.provider == self.name:
            _vnis(tx).vni_owe(cred.id, _data(cred.resources)["vni"], node)

    def node_state(
        self, tx: Transaction, node: str
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(live, owed) (credential, VNI) pairs of ``node`` (``NodeSlingshotState``)."""
        return _vnis(tx).vni_node_state(node)

    def node_cleaned(
        self, tx: Transaction, node: str, credentials: list[int], now: float
    ) -> list[int]:
        """``node`` destroyed its CXI services of these freed credentials: those it owed."""
        return _vnis(tx).vni_confirm(node, credentials, now)

    # -- ExternalObjects: a VNI returns to the pool ----------------------------------------

    def release_external(self, resources: Resources) -> None:
        """Succeeds once no node owes a cleanup and the quarantine passed; raises otherwise."""
        if self.store is None:
            raise RuntimeError("slingshot provider has no store bound")
        d = _data(resources)
        vni, credential = d["vni"], d["credential"]
        with self.store.transaction() as tx:
            row = _vnis(tx).vni_row(vni)
            if row is None or row[0] != credential or row[1] != "cleanup":
                return  # already returned to the pool (a retry after a crash)
            nodes = _vnis(tx).vni_owing_nodes(credential)
            if nodes:
                shown = ", ".join(nodes[:5]) + (f" and {len(nodes) - 5} more" if nodes[5:] else "")
                raise RuntimeError(
                    f"waiting for node(s) {shown} to confirm their CXI services of VNI {vni} "
                    "are destroyed"
                )
            left = row[2] + self.quarantine - self.clock()
            if left > 0:
                raise NotYet(
                    f"VNI {vni} in quarantine for {left:.0f} more s", row[2] + self.quarantine
                )
            _vnis(tx).vni_finish(vni, credential, self.clock())
        log.info("VNI %d of freed credential %d is back in the pool", vni, credential)

    def describe_external(self, resources: Resources) -> str:
        return f"VNI {_data(resources).get('vni', '?')}"

    def describe(self, slots: SlotAllocator) -> dict[str, object]:
        counts = _vnis(slots).vni_counts(self.vni_min, self.vni_max)
        busy = counts.get("live", 0) + counts.get("cleanup", 0)
        return {
            "name": self.name,
            "ptag": 0,
            "vni_range": [self.vni_min, self.vni_max],
            "cookies_per_credential": 1,
            "capacity": self.capacity,
            "allocated": counts.get("live", 0),
            "in_cleanup": counts.get("cleanup", 0),
            "quarantine": self.quarantine,
            "free": self.capacity - busy,
        }


def _data(resources: Resources) -> dict[str, int]:
    try:
        data = json.loads(resources.data)
    except ValueError:
        data = None
    if not isinstance(data, dict) or "vni" not in data or "credential" not in data:
        raise ValueError(f"not the data of a slingshot credential: {resources.data!r}")
    return data


def vni_of(resources: Resources) -> int:
    """The VNI of a slingshot credential's resources (its first cookie)."""
    return resources.cookie1
