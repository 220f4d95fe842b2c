"""The audit trail of refused calls: one grep-able ``drc.audit`` line per refusal, counted
per code, rate-limited so a client looping on a refusal cannot flood the journal.

State changes are audited by the core service; refusals change nothing, so they are audited
by the one dispatch path of every transport (:class:`drc.dispatch.Dispatcher`), which the
daemons wire to :meth:`RefusalAudit.record` through their exports' ``refused`` method.
Every line reads::

    refused verb=Access uid=1002 job=0 node=n1 credential=4 code=DRC_EPERM reason="..."

with `` suppressed=N`` appended when N lines were dropped by the rate limit before it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from drc.core.errors import Code, DrcError
from drc.export import ExportedMethod

audit = logging.getLogger("drc.audit")

#: Sustained lines per second, and the burst allowed on top (a token bucket).
RATE = 5.0
BURST = 20
MAX_REASON = 300


class RefusalAudit:
    def __init__(
        self,
        *,
        rate: float = RATE,
        burst: int = BURST,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.counts: Counter[Code] = Counter()
        self.suppressed = 0  # lines dropped since the last one written
        self.suppressed_total = 0
        self._tokens = float(burst)
        self._last = clock()

    def record(
        self,
        verb: str,
        uid: int,
        job: int,
        node: str,
        credential: int | None,
        error: DrcError,
    ) -> bool:
        """Count the refusal and log it unless over the rate; True if a line was written."""
        self.counts[error.code] += 1
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            self.suppressed_total += 1
            return False
        self._tokens -= 1
        reason = error.message.replace("\n", " ")[:MAX_REASON].replace('"', "'")
        cred = "-" if credential is None else str(credential)
        tail = f" suppressed={self.suppressed}" if self.suppressed else ""
        self.suppressed = 0
        audit.warning(
            'refused verb=%s uid=%d job=%d node=%s credential=%s code=%s reason="%s"%s',
            verb,
            uid,
            job,
            node,
            cred,
            error.name,
            reason,
            tail,
        )
        return True

    def counters(self) -> dict[str, int]:
        """``refused_<CODE>`` for each code seen, and the lines the rate limit dropped."""
        out = {f"refused_{code.name}": n for code, n in sorted(self.counts.items())}
        out["refused_lines_suppressed"] = self.suppressed_total
        return out


def credential_of(verb: ExportedMethod, args: list[object]) -> int | None:
    """The credential id a call names, read where its declaration names a ``credential``
    argument (no list of verbs to keep: a new verb is audited with its credential)."""
    at = verb.credential_index
    value = args[at] if at is not None and at < len(args) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
