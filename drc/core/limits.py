"""The seven limit checks. Each one that is set is checked on its own: any exceeded refuses.

A specific uid/gid/job limit therefore adds a bound; it never lifts a default one. A user's
count is the live credentials it owns or pins (:class:`drc.core.model.Usage`), so a credential
kept alive only by the user's pin counts against that user. Users reaching a limit are audited
by :class:`LimitHits`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from drc.core.errors import Code, DrcError
from drc.core.model import Caller, Limit, LimitScope, Usage

audit = logging.getLogger("drc.audit")

#: Seconds between two ``limit-reached`` lines for one limit and one user, group or job.
AUDIT_INTERVAL = 60.0
#: Entries :class:`LimitHits` remembers before it forgets the quiet ones.
AUDIT_KEEP = 10_000


def check_limits(
    limits: Iterable[Limit],
    usage: Usage,
    uid: int,
    gid: int,
    job: int,
    notes: Mapping[Limit, str] | None = None,
) -> None:
    """Refuse (ENOSPC) if one more credential owned by (uid, gid, job) breaks any limit.

    ``notes``: where a limit comes from, for the message (the drc.conf default).
    """
    counted = {
        LimitScope.GLOBAL: (usage.total, None),
        LimitScope.USER_DEFAULT: (usage.by_uid, f"uid {uid} (owned or pinned)"),
        LimitScope.GROUP_DEFAULT: (usage.by_gid, f"gid {gid}"),
        LimitScope.JOB_DEFAULT: (usage.by_job, f"job {job}"),
        LimitScope.UID: (usage.by_uid, f"uid {uid} (owned or pinned)"),
        LimitScope.GID: (usage.by_gid, f"gid {gid}"),
        LimitScope.JOB: (usage.by_job, f"job {job}"),
    }
    specific = {LimitScope.UID: uid, LimitScope.GID: gid, LimitScope.JOB: job}
    for limit in sorted(limits):
        if limit.scope.takes_id and specific[limit.scope] != limit.id:
            continue
        if limit.scope in (LimitScope.JOB_DEFAULT, LimitScope.JOB) and job == 0:
            continue  # outside a job there is no job to count against
        in_use, whom = counted[limit.scope]
        if in_use >= limit.value:
            scope = limit.scope.value + (f" {limit.id}" if limit.scope.takes_id else "")
            owner = f" for {whom}" if whom else ""
            note = (notes or {}).get(limit)
            error = DrcError(
                Code.ENOSPC,
                f"{scope} limit of {limit.value} live credential(s) reached{owner} "
                f"({in_use} in use)" + (f"; {note}" if note else ""),
            )
            error.limit_scope = limit.scope.value  # which limit refused, for the refusal counts
            raise error


class LimitHits:
    """The audit of callers reaching a limit: a ``limit-reached`` line the first time, then
    at most one per :data:`AUDIT_INTERVAL` for the same limit and the same uid, gid or job,
    with the refusals in between. A loop hammering its limit writes a line a minute, and an
    admin still learns who is at a limit even when the refusal was a node's (DRCC audits
    those on its node; DRCS's bus audits only its own callers)."""

    def __init__(self, clock: Callable[[], float], interval: float = AUDIT_INTERVAL) -> None:
        self.clock = clock
        self.interval = interval
        self._last: dict[tuple[LimitScope, int], tuple[float, int]] = {}  # -> (line at, refused)

    def record(self, caller: Caller, error: DrcError) -> bool:
        """Count a limit refusal; True when a line was written."""
        scope = LimitScope(error.limit_scope) if error.limit_scope else LimitScope.GLOBAL
        key = (scope, _SUBJECT[scope](caller))
        now = self.clock()
        last, refused = self._last.get(key, (None, 0))
        if last is not None and now - last < self.interval:
            self._last[key] = (last, refused + 1)
            return False
        if len(self._last) >= AUDIT_KEEP:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.interval}
        self._last[key] = (now, 0)
        audit.warning(
            'limit-reached scope=%s uid=%d gid=%d job=%d holder=%s refused_before=%d reason="%s"',
            scope.value,
            caller.uid,
            caller.gid,
            caller.job,
            caller.holder,
            refused,
            error.message.replace('"', "'"),
        )
        return True


#: Whom a refusal by each scope is about: the key of its audit line.
_SUBJECT: dict[LimitScope, Callable[[Caller], int]] = {
    LimitScope.GLOBAL: lambda c: 0,
    LimitScope.USER_DEFAULT: lambda c: c.uid,
    LimitScope.UID: lambda c: c.uid,
    LimitScope.GROUP_DEFAULT: lambda c: c.gid,
    LimitScope.GID: lambda c: c.gid,
    LimitScope.JOB_DEFAULT: lambda c: c.job,
    LimitScope.JOB: lambda c: c.job,
}
