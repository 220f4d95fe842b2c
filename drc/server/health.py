"""Whether DRCS's store answers: one small object the daemon, status, metrics and the
service manager's watchdog all read.

The store is *not answering* from the moment a store call outlives its deadline or fails
because the database cannot be reached (connection lost, lock or statement timeout, SQLite
busy), until the next store call completes. While it is so, DRCS refuses new store work at
once with ECONNREFUSED (the message names the database, from :meth:`StoreHealth.error`),
answers status from memory, and keeps reading D-Bus and the DRC link.

API (for other parts of drcs): ``answering`` (bool), ``since`` (wall-clock seconds when it
stopped answering, or None), ``unanswered_seconds()``, ``as_dict()`` (the ``store_health``
field of ``drccli status --json``) and ``error()``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from drc.core.errors import Code, DrcError

log = logging.getLogger("drc.server")


class StoreHealth:
    """The store's answering state; changed only on DRCS's event loop."""

    def __init__(self, database: str, clock: Any = time.time) -> None:
        self.database = database  # as messages may name it: no password (PeeweeStore.label)
        self.clock = clock
        self.since: float | None = None  # wall-clock time it stopped answering
        self.detail = ""

    @property
    def answering(self) -> bool:
        return self.since is None

    def unanswered_seconds(self) -> float:
        return 0.0 if self.since is None else max(0.0, self.clock() - self.since)

    def silent(self, since: float, detail: str) -> None:
        """A store call begun at ``since`` (wall clock) has not completed, or failed to reach
        the database: the store is not answering (from the earliest such time)."""
        if self.since is None:
            self.since = since
            self.detail = detail
            log.error("the store %s is not answering: %s", self.database, detail)

    def answered(self) -> None:
        """A store call completed: the database answers again."""
        if self.since is not None:
            log.warning(
                "the store %s answers again (after %.1f s)",
                self.database,
                self.unanswered_seconds(),
            )
            self.since = None
            self.detail = ""

    def error(self) -> DrcError:
        """The refusal of store work while the store is not answering."""
        return DrcError(
            Code.ECONNREFUSED,
            f"the database ({self.database}) has not answered for "
            f"{self.unanswered_seconds():.1f} s ({self.detail}); DRCS refuses changes until "
            "it answers: look at the database server",
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "answering": self.answering,
            "since": self.since or 0.0,
            "unanswered_seconds": round(self.unanswered_seconds(), 3),
            "detail": self.detail,
        }
