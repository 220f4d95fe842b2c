"""The nouns of DRC: flags, callers, holders, credentials, grants, limits.

Plain values only; what may be done with them lives in :mod:`drc.core.service`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from drc.core.errors import ebadtarget, eflags, einval

UINT32_MAX = 0xFFFF_FFFF
#: uid/gid (uint32)-1 means "no id" to the kernel; it is never a valid target.
INVALID_ID = UINT32_MAX


class Flags(enum.IntFlag):
    """Bits of the ``flags`` argument, numbered as in ``rdmacred.h``."""

    NONE = 0
    FLEX_CREDENTIAL = 1 << 0
    PERSISTENT = 1 << 1
    TARGET_UID = 1 << 2
    TARGET_GID = 1 << 3
    TARGET_WLM = 1 << 4


ACQUIRE_FLAGS = Flags.FLEX_CREDENTIAL | Flags.PERSISTENT
TARGET_FLAGS = Flags.TARGET_UID | Flags.TARGET_GID | Flags.TARGET_WLM


class TargetKind(enum.StrEnum):
    UID = "uid"
    GID = "gid"
    WLM = "wlm"


_TARGET_BY_FLAG = {
    Flags.TARGET_UID: TargetKind.UID,
    Flags.TARGET_GID: TargetKind.GID,
    Flags.TARGET_WLM: TargetKind.WLM,
}


@dataclass(frozen=True, order=True)
class Target:
    """Who a grant is for: a uid, a gid or a job (WLM id)."""

    kind: TargetKind
    id: int

    @classmethod
    def from_flags(cls, target: int, flags: int) -> Target:
        """Decode the C-style ``(target, flags)`` pair, refusing anything ambiguous."""
        check_uint32("target", target)
        check_uint32("flags", flags)
        if flags & ~int(TARGET_FLAGS):
            raise eflags(f"grant/revoke flags 0x{flags:x} carry bits other than TARGET_UID|GID|WLM")
        kinds = [kind for bit, kind in _TARGET_BY_FLAG.items() if flags & bit]
        if len(kinds) != 1:
            raise eflags("exactly one of TARGET_UID, TARGET_GID, TARGET_WLM must be set")
        kind = kinds[0]
        if kind is TargetKind.WLM and target == 0:
            raise ebadtarget(
                "job (WLM) id 0 means 'no job' and cannot be granted: the peer that sent it"
                " runs outside any job; grant its uid (DRC_FLAGS_TARGET_UID) instead"
            )
        if kind is not TargetKind.WLM and target == INVALID_ID:
            raise ebadtarget(f"{kind} {target} is the invalid id (-1)")
        return cls(kind, target)

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"


class HolderKind(enum.StrEnum):
    JOB = "job"  # all processes of one job on one node
    PROCESS = "process"  # one process outside any job, on one node
    PIN = "pin"  # a uid's pin: outlives processes and jobs until that uid releases


@dataclass(frozen=True, order=True)
class Holder:
    """Who a reference belongs to. A reference is the association (credential, holder)."""

    kind: HolderKind
    node: str = ""
    job: int = 0
    pid: int = 0
    start: int = 0  # process start time (clock ticks since boot): pids are reused
    uid: int = 0  # for PIN

    @classmethod
    def for_job(cls, node: str, job: int) -> Holder:
        return cls(HolderKind.JOB, node=node, job=job)

    @classmethod
    def for_process(cls, node: str, pid: int, start: int) -> Holder:
        return cls(HolderKind.PROCESS, node=node, pid=pid, start=start)

    @classmethod
    def pin(cls, uid: int) -> Holder:
        return cls(HolderKind.PIN, uid=uid)

    @property
    def tenant(self) -> tuple[str, int] | None:
        """What a non-FLEX credential is bound to on a node: the job, else the process.

        Pins live on no node, so they never occupy one.
        """
        if self.kind is HolderKind.JOB:
            return ("job", self.job)
        if self.kind is HolderKind.PROCESS:
            return ("process", self.pid)
        return None

    def __str__(self) -> str:
        if self.kind is HolderKind.JOB:
            return f"job {self.job} on {self.node}"
        if self.kind is HolderKind.PROCESS:
            return f"pid {self.pid} on {self.node}"
        return f"pin of uid {self.uid}"


@dataclass(frozen=True)
class Caller:
    """Who is asking, as established by the kernel (bus peer credentials, cgroup, slurmd).

    Never built from a request's arguments: the exporters fill it in.
    """

    uid: int
    gid: int
    gids: frozenset[int] = frozenset()
    pid: int = 0
    job: int = 0  # WLM id; 0 outside any job
    holder: Holder = field(default_factory=lambda: Holder.pin(0))

    @property
    def all_gids(self) -> frozenset[int]:
        return self.gids | {self.gid}


class State(enum.StrEnum):
    ACTIVE = "ACTIVE"
    # The owner released it (or, for a transient credential, the owner's holder ended):
    # no new access or grant; live references keep the resources until the last one goes.
    RELEASED = "RELEASED"


@dataclass(frozen=True)
class Resources:
    """What a provider allocated: the network credential an application configures."""

    provider: str
    cookie1: int
    cookie2: int = 0
    ptag: int = 0
    # Provider-private bookkeeping (e.g. the pool slot), opaque to everybody else.
    data: str = ""


#: The epoch a freed credential "has": newer than any token's, so DRCS's change feed and
#: NodeEpochs report a free as this epoch and every node refuses the credential's tokens.
FREED = 0xFFFF_FFFF


@dataclass(frozen=True)
class Credential:
    id: int
    uid: int
    gid: int
    wlm: int
    flags: Flags
    state: State
    resources: Resources
    created: float
    epoch: int = 0  # revocation epoch: bumped by every revoke, checked by tokens
    refs: int = 0
    grants: tuple[Target, ...] = ()

    @property
    def persistent(self) -> bool:
        return bool(self.flags & Flags.PERSISTENT)

    @property
    def flex(self) -> bool:
        return bool(self.flags & Flags.FLEX_CREDENTIAL)


@dataclass(frozen=True)
class AccessInfo:
    """What ACCESS answers: the credential's network resources."""

    credential: int
    cookie1: int
    cookie2: int
    ptag: int


class LimitScope(enum.StrEnum):
    GLOBAL = "global"
    USER_DEFAULT = "user-default"
    GROUP_DEFAULT = "group-default"
    JOB_DEFAULT = "job-default"
    UID = "uid"
    GID = "gid"
    JOB = "job"

    @property
    def takes_id(self) -> bool:
        return self in (LimitScope.UID, LimitScope.GID, LimitScope.JOB)


@dataclass(frozen=True, order=True)
class Limit:
    """At most ``value`` live credentials in ``scope`` (for ``id`` where the scope takes one)."""

    scope: LimitScope
    id: int
    value: int

    def __str__(self) -> str:
        where = f" {self.id}" if self.scope.takes_id else ""
        return f"{self.scope.value}{where}: {self.value}"


#: Which count of :class:`Usage` a limit of each scope is checked against.
COUNTED_BY: dict[LimitScope, str] = {
    LimitScope.GLOBAL: "total",
    LimitScope.USER_DEFAULT: "uid",
    LimitScope.UID: "uid",
    LimitScope.GROUP_DEFAULT: "gid",
    LimitScope.GID: "gid",
    LimitScope.JOB_DEFAULT: "job",
    LimitScope.JOB: "job",
}


@dataclass(frozen=True)
class Usage:
    """Live credentials counted the ways the seven limits need. ``by_uid`` counts those the
    uid owns and those its pins hold: a pin keeps a credential (a pool slot) alive with no
    process or job behind it, so it counts against whoever holds it."""

    total: int
    by_uid: int
    by_gid: int
    by_job: int


def check_uint32(name: str, value: object) -> int:
    """Refuse anything that is not a uint32 (bools included: they are a caller's bug)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= UINT32_MAX:
        raise einval(f"{name} must be an integer in 0..{UINT32_MAX}, got {value!r}")
    return value
