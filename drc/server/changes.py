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

Polls answered together with the same news (the same generation and ``since``) get one
:class:`~drc.link.protocol.Shared` answer: the link seals it once and sends the same bytes to
each node, so a change reaching 10,000 nodes costs one MUNGE encode, not 10,000. The answer
names the question it answers (generation, ``since``), which is what lets each node check it is
fresh (:mod:`drc.link.protocol`, shared answers). A heartbeat (a poll whose time is up with
nothing new) is answered per request, as a shared one would be refused.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import logging
import math
import os
from collections import deque

from drc.core.model import FREED
from drc.link.protocol import Shared

log = logging.getLogger(__name__)


#: A long poll with changes to answer gathers more this long before answering: every answer
#: wakes each following node (a write, a decode on its munged, a parse), so a burst of frees
#: (hundreds a second) otherwise woke every node once per free. Small beside revocation's
#: budget.
COALESCE = 0.01

#: Long polls end on whole-second ticks: one timer for all of them, not one each.
TICK = 1.0

#: Parked polls answered in the first event-loop turn of a change, and in each turn after it.
#:
#: An answer is written two turns after its poll is answered (the dispatch check's callback,
#: then the link's), and the node it reaches polls again within a millisecond: DRCS decodes
#: that poll on its munged (~0.1 ms) once a turn reads it, and a turn reads only after running
#: the callbacks queued before it began. So the first slice's writes (turn 3) come before any
#: new poll is read, and so do the second's (turn 4: queued in turn 3, before turn 4 reads the
#: first slice's nodes' polls); a third slice's would come after them. The first slice is
#: small, so the first writes start at once, and the second takes every other poll of a
#: cluster of the design size (10,000 nodes): no write waits for a node's next poll. In
#: slices of 500 every turn, DRCS decoded nearly every other node's next poll before the last
#: node heard (10,000 nodes with their next polls sent at once: p99 2.9-5.4 s, against
#: 1.5-2.8 s in one turn, side by side on a loaded 2-core host). Other requests wait those
#: turns (~0.25 s of CPU at 10,000 nodes) once per change; larger clusters go on in slices.
FIRST_SLICE = 500
FAN_OUT = 20_000

#: ``Future.done`` of the loop's futures, mapped over the parked polls (:attr:`followers`).
_future_done = asyncio.Future.done

#: What a long poll answers: (generation, complete, seq, [(credential, epoch), ...]).
Answer = tuple[str, bool, int, list[tuple[int, int]]]


class ChangeLog:
    """The recent changes, and the long polls of the nodes following them.

    A following node parks one poll here at all times, so a DRCS of 10,000 nodes holds
    10,000: each is a future in a table (no task, no coroutine, no timer of its own), all
    answered when a change comes (in two loop turns up to :data:`FAN_OUT`, the polls from
    one ``since`` with one shared answer) and expired by one ticking timer.
    """

    def __init__(self, keep: int = 100_000) -> None:
        self.generation = os.urandom(8).hex()
        self.seq = 0
        self._log: deque[tuple[int, int, int]] = deque(maxlen=keep)
        self._polls: dict[asyncio.Future[Answer], int] = {}  # parked poll -> its ``since``
        self._ends: dict[int, list[asyncio.Future[Answer]]] = {}  # tick -> polls ending then
        self._ticking: asyncio.TimerHandle | None = None
        self._answering: asyncio.TimerHandle | None = None
        #: Polls being answered, :data:`FAN_OUT` a turn: (poll, its since, its generation).
        self._fanout: deque[tuple[asyncio.Future[Answer], int, str]] = deque()
        self._fanning: asyncio.Handle | None = None
        #: The answers made since the last change: (asked generation, since) -> its answer.
        self._answers: dict[tuple[str, int], Shared] = {}
        self._answers_at = (self.generation, self.seq)
        self._context = contextvars.Context()  # the polls' callbacks need none of their own

    def record(self, kind: str, credential: int, value: int) -> None:
        """A core change listener: ("revoked", cred, epoch) or ("freed", cred, 0)."""
        self.seq += 1
        self._log.append((self.seq, credential, FREED if kind == "freed" else value))
        if self._polls:
            self._answer_soon()

    def new_generation(self) -> None:
        """Changes may have been missed: followers must resynchronise (see module doc)."""
        asked, self.generation = self.generation, os.urandom(8).hex()
        self._log.clear()
        self._answer_all(everyone=True, asked=asked)

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
        # at C speed (asked once per standby link opened: thousands at once in a fail-over)
        polls = self._polls
        return len(polls) - sum(map(_future_done, polls))

    def poll(self, generation: str, since: int, timeout: float) -> asyncio.Future[Answer]:
        """A future of the changes after ``since``: answered :data:`COALESCE` after the next
        change (at once if there are some), or empty after about ``timeout`` seconds. Another
        ``generation`` is answered at once, incomplete: the follower must resynchronise.
        Cancel it to stop following (the node went)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        if generation != self.generation:
            future.set_result((self.generation, False, self.seq, []))
            return future
        self._polls[future] = since  # a cancelled one is dropped at the next tick
        if self.seq > since:  # a change it has not seen: let the rest of a burst gather
            self._answer_soon()
            return future
        if timeout <= 0:
            self._answer(future, since)
            return future
        tick = math.ceil((loop.time() + timeout) / TICK)
        ending = self._ends.get(tick)
        if ending is None:
            self._ends[tick] = [future]
            self._schedule_tick(loop)
        else:
            ending.append(future)
        return future

    def _answer(self, future: asyncio.Future[Answer], since: int) -> None:
        if not future.done():
            complete, changes = self.since(since)
            future.set_result((self.generation, complete, self.seq, changes))

    def _shared(self, since: int, asked: str) -> Shared:
        """The one answer of every poll from (``asked``, ``since``) answered now, until the
        next change (module doc). A poll of a replaced generation learns the new one, with
        no changes: it must resynchronise."""
        if self._answers_at != (self.generation, self.seq):
            self._answers.clear()
            self._answers_at = (self.generation, self.seq)
        answer = self._answers.get((asked, since))
        if answer is None:
            if asked == self.generation:
                complete, changes = self.since(since)
            else:
                complete, changes = False, []
            answer = self._answers[asked, since] = Shared(
                (self.generation, complete, self.seq, changes), [asked, since]
            )
        return answer

    def _queue(self, future: asyncio.Future[Answer], since: int, asked: str) -> None:
        if not future.done():
            self._fanout.append((future, since, asked))

    def _fan_out(self, count: int = FAN_OUT) -> None:
        """Answer the next ``count`` queued polls, and the rest from the next turns."""
        self._fanning = None
        fanout = self._fanout
        for _ in range(min(count, len(fanout))):
            future, since, asked = fanout.popleft()
            if asked == self.generation and since >= self.seq:
                self._answer(future, since)  # a heartbeat: never shared (fresh_feed_answer)
            elif not future.done():  # its node may have gone meanwhile
                future.set_result(self._shared(since, asked))
        if fanout:
            self._fanning = asyncio.get_running_loop().call_soon(
                self._fan_out, context=self._context
            )

    def _start_fan_out(self) -> None:
        """The first slice now; the next ones on the following turns (:data:`FAN_OUT`)."""
        if self._fanning is None and self._fanout:
            self._fan_out(FIRST_SLICE)

    def _answer_soon(self) -> None:
        if self._answering is None:
            self._answering = asyncio.get_running_loop().call_later(
                COALESCE, self._answer_all, False, context=self._context
            )

    def _answer_all(self, everyone: bool, asked: str | None = None) -> None:
        """Answer the parked polls that have news (every one, for a new generation): a node
        that asked with an old ``since`` must not wake the nodes that are up to date. Every
        parked poll asked in the current generation (``asked``: the one just replaced)."""
        if self._answering is not None:
            self._answering.cancel()
            self._answering = None
        asked = self.generation if asked is None else asked
        for future, since in list(self._polls.items()):
            if everyone or since < self.seq or future.done():
                self._queue(future, since, asked)
                del self._polls[future]
        self._start_fan_out()
        # answered and cancelled polls leave their ticks too (a burst of changes would
        # otherwise keep every node's answered poll until its timeout)
        self._ends = {
            t: live for t, fs in self._ends.items() if (live := [f for f in fs if not f.done()])
        }
        if not self._ends and self._ticking is not None:
            self._ticking.cancel()
            self._ticking = None

    def _tick(self) -> None:
        """End the polls whose time is up; tick again while any are parked."""
        loop = asyncio.get_running_loop()
        now = math.floor(loop.time() / TICK + 1e-6)
        for tick in [t for t in self._ends if t <= now]:
            for future in self._ends.pop(tick):
                since = self._polls.pop(future, None)
                if since is not None:
                    self._queue(future, since, self.generation)
        self._start_fan_out()
        for future in [f for f in self._polls if f.done()]:
            del self._polls[future]  # cancelled: its node went
        self._ticking = None
        self._schedule_tick(loop)

    def _schedule_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer, for the earliest tick that ends a poll."""
        if not self._ends:
            return
        first = min(self._ends)
        if self._ticking is not None:
            if self._ticking.when() <= first * TICK:
                return
            self._ticking.cancel()
        self._ticking = loop.call_at(first * TICK, self._tick, context=self._context)


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

    def __init__(
        self,
        changes: ChangeLog,
        url: str,
        channel: str,
        retry: float = 1.0,
        params: dict[str, object] | None = None,
    ) -> None:
        self.changes = changes
        self.conninfo = "postgresql://" + url.split("://", 1)[1]
        self.channel = channel
        self.retry = retry
        #: libpq parameters: the connect timeout and TCP keepalives of the store's connections,
        #: so a listening connection whose host went silent ends (and the log resyncs) instead
        #: of waiting forever for notifications that cannot come.
        self.params = dict(params or {})
        self.listening = asyncio.Event()

    async def run(self) -> None:
        import psycopg

        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.conninfo, autocommit=True, **self.params
                )
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
