"""Revocations and frees, pushed to node daemons as they happen.

DRCC answers cached and token accesses alone, so it must hear at once when a credential is
revoked (tokens of an older epoch die) or freed (its cookie may be reused). Each DRCC keeps
one long-poll ``NodeWatch`` call open; this log answers it. The log is a notification
channel, not state: a DRCS restart starts a new generation and DRCCs then resynchronise.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections import deque

FREED = 0xFFFF_FFFF  # the epoch a freed credential "has": newer than any token's


class ChangeLog:
    def __init__(self, keep: int = 100_000) -> None:
        self.generation = os.urandom(8).hex()
        self.seq = 0
        self._log: deque[tuple[int, int, int]] = deque(maxlen=keep)
        self._waiters: set[asyncio.Future[None]] = set()

    def record(self, kind: str, credential: int, value: int) -> None:
        """A core change listener: ("revoked", cred, epoch) or ("freed", cred, 0)."""
        self.seq += 1
        self._log.append((self.seq, credential, FREED if kind == "freed" else value))
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    def since(self, seq: int) -> tuple[bool, list[tuple[int, int]]]:
        """(complete, [(credential, epoch)…]) after ``seq``; incomplete when it aged out."""
        oldest = self._log[0][0] if self._log else self.seq + 1
        complete = seq + 1 >= oldest or seq >= self.seq
        # Walk back from the newest entry only as far as ``seq``: every follower calls this
        # after each change, so scanning the whole log (up to ``keep``) would cost
        # followers x keep per change.
        newer = list(itertools.takewhile(lambda e: e[0] > seq, reversed(self._log)))
        return complete, [(cred, epoch) for _s, cred, epoch in reversed(newer)]

    @property
    def followers(self) -> int:
        """Node daemons following the feed right now (each keeps one long poll open)."""
        return len(self._waiters)

    async def wait(self, seq: int, timeout: float) -> None:
        """Return when something newer than ``seq`` exists, or after ``timeout``."""
        if self.seq > seq:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._waiters.discard(waiter)
