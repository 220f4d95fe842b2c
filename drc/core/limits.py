"""The seven limit checks. Each one that is set is checked on its own: any exceeded refuses.

A specific uid/gid/job limit therefore adds a bound; it never lifts a default one.
"""

from __future__ import annotations

from collections.abc import Iterable

from drc.core.errors import Code, DrcError
from drc.core.model import Limit, LimitScope, Usage


def check_limits(limits: Iterable[Limit], usage: Usage, uid: int, gid: int, job: int) -> None:
    """Refuse (ENOSPC) if one more credential owned by (uid, gid, job) breaks any limit."""
    counted = {
        LimitScope.GLOBAL: (usage.total, None),
        LimitScope.USER_DEFAULT: (usage.by_uid, f"uid {uid}"),
        LimitScope.GROUP_DEFAULT: (usage.by_gid, f"gid {gid}"),
        LimitScope.JOB_DEFAULT: (usage.by_job, f"job {job}"),
        LimitScope.UID: (usage.by_uid, f"uid {uid}"),
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
            error = DrcError(
                Code.ENOSPC,
                f"{scope} limit of {limit.value} live credential(s) reached{owner} "
                f"({in_use} in use)",
            )
            error.limit_scope = limit.scope.value  # which limit refused, for the refusal counts
            raise error
