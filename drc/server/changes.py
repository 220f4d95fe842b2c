"""Revocations and frees, pushed to node daemons as they happen.

DRCC answers cached and token accesses alone, so it must hear at once when a credential is
revoked (tokens of an older epoch die) or freed (its cookie may be reused). Each DRCC keeps
one long-poll ``NodeWatch`` call open; this log answers it. The log is a notification
channel, not state: a DRCS restart starts a new generation and DRCCs then resynchronise.

With several DRCS on one PostgreSQL the log is fed by :class:`SharedFeed` instead of the
local service: the store sends a ``NOTIFY`` in every transaction that revokes or frees
(delivered at commit), so a change committed through any DRCS reaches the nodes following
every other one at once. No polling. When the listening connection is lost, notifications
may have been missed: the log starts a new generation, and every node following this DRCS
resynchronises its epochs from the store (as after a fail-over, where the generation differs
too).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections import deque

log = logging.getLogger(__name__)

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

    def new_generation(self) -> None:
        """Changes may have been missed: followers must resynchronise (see module doc)."""
        self.generation = os.urandom(8).hex()
        self._log.clear()
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


def parse_notification(payload: str) -> tuple[str, int, int] | None:
    """("revoked", credential, epoch) or ("freed", credential, 0) from a store NOTIFY."""
    parts = payload.split()
    try:
        if parts[0] == "r" and len(parts) == 3:
            return "revoked", int(parts[1]), int(parts[2])
        if parts[0] == "f" and len(parts) == 2:
            return "freed", int(parts[1]), 0
    except (IndexError, ValueError):
        pass
    return None


class SharedFeed:
    """Feed a :class:`ChangeLog` from the PostgreSQL change channel (every DRCS's commits)."""

    def __init__(self, changes: ChangeLog, url: str, channel: str, retry: float = 1.0) -> None:
        self.changes = changes
        self.conninfo = "postgresql://" + url.split("://", 1)[1]
        self.channel = channel
        self.retry = retry
        self.listening = asyncio.Event()

    async def run(self) -> None:
        import psycopg

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {self.channel}")
                    self.changes.new_generation()  # whatever came before may be missed
                    self.listening.set()
                    log.info("change feed: listening on PostgreSQL channel %s", self.channel)
                    async for note in conn.notifies():
                        change = parse_notification(note.payload)
                        if change is not None:
                            self.changes.record(*change)
            except (psycopg.Error, OSError) as err:
                if self.listening.is_set():
                    log.warning("change feed: lost PostgreSQL (%s); reconnecting", err)
                self.listening.clear()
                self.changes.new_generation()  # followers resync once we are back
                await asyncio.sleep(self.retry)
