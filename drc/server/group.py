"""Group commit, off the event loop: DRCS's one gateway to its store.

A storm of small requests (cache misses from thousands of nodes, many drccli/D-Bus callers)
is a storm of tiny transactions, each paying its own commit (on SQLite an fsync: about half
of a small verb's store time). :class:`GroupCommit` runs the verbs that are waiting together
inside one ``store.batch()`` transaction, each in its own savepoint (a refused verb undoes
only itself), and answers them all after the one commit: nothing is acknowledged before it
is durable. A lone verb runs as it would alone. Each call is handed the batch it runs in
(``call(batch)``; None when it runs alone), which a verb passes to its transaction in its
:class:`~drc.core.ports.Unit`: the batch is an argument, not a mode of the thread.

Callers that each wait for their answer before sending the next request (D-Bus clients, node
daemons) come back spread over a few event-loop turns, not in one. When the last batch had
company, the next one waits :data:`GATHER_TURNS` more turns before it runs (the loop polls its
sockets every turn, some microseconds each), so callers that arrived meanwhile join it: fewer
commits. A caller that was alone last time never waits.

In drcs every batch runs on one store thread (``threaded``), never on the event loop, so a
database that stops answering (a lock wait, a lost synchronous standby, a half-open
connection) cannot stop DRCS from reading D-Bus and the DRC link. One thread, one batch at a
time: the order of verbs, Peewee's per-thread connection and SQLite's in-process write lock
stay what they were. While the store keeps answering quickly, the loop waits a moment
(:data:`STORE_GRACE`) for the batch it handed over, which then costs no more than running it
on the loop would. Every call is answered within ``timeout`` seconds of its submission:

- a call still queued when the running batch outlives its deadline never runs: it fails with
  ECONNREFUSED naming the database (:meth:`drc.server.health.StoreHealth.error`), as does
  every call submitted while that batch is stuck;
- the calls of the stuck batch itself are answered "outcome unknown" and the batch is doomed:
  if the database wakes before the batch reached its COMMIT, the store rolls it back
  (:meth:`drc.store.sql.PeeweeStore.guarded`). Only a COMMIT the database had already been
  sent may still complete; a node daemon's retry carries the same request id and is then
  answered from the store's record (:mod:`drc.store.requests`), never run twice.

A verb of a group that meets a lock another DRCS holds (PostgreSQL: the group waits for no
lock) is undone and runs again alone right after the group's commit, before its callers are
answered: no group ever waits for another, so several DRCS never deadlock.

Change events (the core's listeners: the change feed, metrics) that the store thread's
transactions emit are held until the batch is over and delivered on the loop, before its
callers are answered; a batch that failed to commit delivers none. The audit lines its verbs
write (``drc.audit``) are held until the batch is over, then written, before its callers are
answered: a batch that failed to commit writes no line of its verbs that had succeeded
(their changes never happened); a refused verb's lines (a limit reached) are written. A lone
verb's lines are not held: the core writes a change's line after its transaction, which,
alone, is its commit.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from drc.core.errors import Code, DrcError
from drc.core.ports import Contended, StoreUnavailable
from drc.server.health import StoreHealth

log = logging.getLogger("drc.server")
#: The audit trail (drc.core's changes): held while a batch runs (see the module doc).
audit = logging.getLogger("drc.audit")

T = TypeVar("T")

#: Extra event-loop turns a batch waits for more callers when the previous batch had company.
#: Two: a call that arrives during a turn is read in the next and reaches the group in the one
#: after. Measured with bench/bench_drcs.py: batches of 1.85 -> 2.44 verbs, DRCS CPU per
#: acquire+release ~4% lower.
GATHER_TURNS = 2

#: How long the loop waits, blocked, for a batch it handed to the store thread, when the
#: store's last batch took less. A batch that ends within it is answered at once, in the same
#: loop callback: no write to the loop's self-pipe, no loop turn, and the two threads do not
#: contend for the interpreter lock meanwhile. A longer batch (a storm's, or one a stalled
#: database holds) is answered as before while the loop reads on: a stall costs it this once.
#: Measured side by side on a quiet machine (bench/bench_drcs.py, bench/bench_miss.py, four
#: runs each): DRCS CPU per acquire+release 730-930 -> 590-670 us; a cache miss / its floor
#: 1.40-1.52 -> 1.37-1.41.
STORE_GRACE = 0.002

#: :meth:`GroupCommit.soon` calls go next while they took less than this share of the store
#: thread's last :data:`SOON_WINDOW` seconds; past it, each waits behind one batch of the
#: calls waiting. A fail-over's moves (a few ms per gathered call) then never wait for a
#: storm's batch (under load, a second or more each), nor starve it when they keep coming.
SOON_SHARE = 0.5
SOON_WINDOW = 1.0

#: What a group runs: ``call(batch)``, with the store's open batch or None (alone).
Call = Callable[[Any], T]
Pending = tuple[Callable[[Any], Any], "asyncio.Future[Any]", bool, float]
Outcome = tuple["asyncio.Future[Any]", Any, "BaseException | None"]
#: ``then(future)``: told of a call's future as soon as it is set, in the same callback.
Then = Callable[["asyncio.Future[Any]"], None]


class _HeldAudit(logging.Filter):
    """Holds the audit records of a thread running a batch, in the list it set."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        held: list[logging.LogRecord] | None = getattr(self.local, "records", None)
        if held is None:
            return True
        held.append(record)
        return False


_held_audit = _HeldAudit()
audit.addFilter(_held_audit)


def _taken_lock() -> threading.Lock:
    lock = threading.Lock()
    lock.acquire()
    return lock


@dataclass(eq=False)
class _Job:
    """One batch on its way through the store thread."""

    calls: list[Pending]
    started: float = field(default_factory=time.time)  # wall clock, for the health report
    overdue: bool = False  # answered "outcome unknown": must not commit (read by the thread)
    timer: asyncio.TimerHandle | None = None
    events: list[tuple[Callable[..., None], tuple[Any, ...]]] = field(default_factory=list)
    soon: bool = False  # a call made with GroupCommit.soon
    began: float = 0.0  # loop time it was handed to the store thread
    audit: list[logging.LogRecord] = field(default_factory=list)  # held by _run
    # The store thread hands the outcomes back: set under ``handoff``; ``ended`` is released
    # then, unless the loop stopped waiting (``posted``): the thread posts them to it instead.
    outcomes: list[Outcome] | None = None
    posted: bool = False
    handoff: threading.Lock = field(default_factory=threading.Lock)
    ended: threading.Lock = field(default_factory=_taken_lock)

    def write_audit(self) -> None:
        """Write the audit lines the batch's verbs held."""
        for record in self.audit:
            audit.callHandlers(record)  # past the logger's filter that held it
        self.audit.clear()

    def guard(self) -> None:
        """Called by the store just before each COMMIT of this batch."""
        if self.overdue:
            raise DrcError(Code.ECONNREFUSED, "answered as failed: rolled back, not committed")


class GroupCommit:
    """Run the calls waiting together inside one ``store.batch()``.

    Only for calls whose whole effect is in the database: a call that also changes
    something outside it (an external cleanup after a free) must commit on its own first
    (:meth:`alone`).
    """

    def __init__(
        self,
        store: Any,
        max_batch: int = 256,
        *,
        threaded: bool = False,
        health: StoreHealth | None = None,
        timeout: float = 2.0,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        # not threaded: batches run on the loop (tests of the grouping alone)
        self._jobs: queue.SimpleQueue[_Job | None] | None = None
        if threaded:
            self._jobs = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.health = health or StoreHealth(getattr(store, "label", "the store"))
        self.timeout = timeout
        self._pending: list[Pending] = []
        self._company = False  # whether the last batch held more than one call
        self._turns_left = 0
        self._running: _Job | None = None
        self._worker_thread: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._soon: set[asyncio.Future[Any]] = set()  # pending calls made with soon()
        self._soon_log: deque[tuple[float, float]] = deque()  # (end, seconds) of those run
        self._then: dict[asyncio.Future[Any], Then] = {}  # the thens of calls not answered
        self._last_run = 0.0  # seconds the store thread's last batch took

    def submit(self, call: Call[T], then: Then | None = None) -> asyncio.Future[T]:
        """A future of ``call(batch)``'s result, set after its batch commits. A future, not a
        coroutine: no task per call. ``then(future)`` is called right after the future is set
        (not when it is cancelled), in the same loop callback: a done callback would cost
        the answer one more event-loop turn (the dispatcher answers both transports so)."""
        return self._enqueue(call, alone=False, then=then)

    def alone(self, call: Call[T], then: Then | None = None) -> asyncio.Future[T]:
        """As :meth:`submit`, for a call that runs in a transaction of its own (it frees with
        external cleanups, or only reads), in its turn on the store thread: ``call(None)``."""
        return self._enqueue(call, alone=True, then=then)

    def soon(self, call: Call[T]) -> asyncio.Future[T]:
        """As :meth:`alone`, ahead of the calls waiting: next, after the batch running if
        one is; but while such calls took over :data:`SOON_SHARE` of the store thread's time
        lately, right behind the calls the next batch takes. For work that must not wait
        for a storm to drain (the nodes that moved here after a DRCS failed, gathered into
        one call), yet, when it keeps coming, must not starve the storm either."""
        return self._enqueue(call, alone=True, soon=True)

    def _soon_share_used(self, now: float) -> bool:
        """Whether calls made :meth:`soon` took their share of the last window."""
        log = self._soon_log
        while log and log[0][0] < now - SOON_WINDOW:
            log.popleft()
        return sum(seconds for _end, seconds in log) >= SOON_SHARE * SOON_WINDOW

    def _next_batch(self) -> int:
        """How many of the calls waiting the next batch takes (a lone call is a batch)."""
        if not self._pending:
            return 0
        if self._pending[0][2]:
            return 1
        size = 0
        for _call, _future, alone, _at in self._pending[: self.max_batch]:
            if alone:
                break
            size += 1
        return size

    def _enqueue(
        self, call: Call[T], alone: bool, soon: bool = False, then: Then | None = None
    ) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        future: asyncio.Future[T] = loop.create_future()
        if self._running is not None and self._running.overdue:
            future.set_exception(self.health.error())  # the store is stuck: fail fast
            if then is not None:  # not before the caller has its future
                future.add_done_callback(then)
            return future
        if then is not None:
            self._then[future] = then
        if not soon:
            at = len(self._pending)
        elif self._running is not None or not self._soon_share_used(loop.time()):
            at = 0
        else:
            at = self._next_batch()
        if soon:
            self._soon.add(future)
        self._pending.insert(at, (call, future, alone, loop.time()))
        if len(self._pending) == 1 and self._running is None:
            self._turns_left = GATHER_TURNS if self._company else 0
            loop.call_soon(self._flush)
        return future

    def hold_events(self, listeners: list[Callable[..., None]]) -> None:
        """Make the core's change listeners safe from the store thread (see the module doc)."""
        listeners[:] = [functools.partial(self._event, listener) for listener in listeners]

    def _event(self, listener: Callable[..., None], *event: Any) -> None:
        running = self._running
        if threading.get_ident() == self._worker_thread and running is not None:
            running.events.append((listener, event))
        elif self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(listener, *event)  # e.g. the cleanup thread
        else:
            listener(*event)

    def _flush(self) -> None:
        if self._running is not None or not self._pending:
            return  # the running batch's end flushes again
        loop = asyncio.get_running_loop()
        if self._turns_left and len(self._pending) < self.max_batch:
            self._turns_left -= 1
            loop.call_soon(self._flush)  # let the loop read once more
            return
        size = self._next_batch()
        job = _Job(self._pending[:size])
        self._pending = self._pending[size:]
        self._company = size > 1
        job.soon, job.began = job.calls[0][1] in self._soon, loop.time()
        self._soon.discard(job.calls[0][1])
        if self._jobs is None:
            self._settle(job, self._run(job))
            if self._pending:
                loop.call_soon(self._flush)
            return
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._serve, args=(self._jobs, loop), name="drcs-store", daemon=True
            )
            self._thread.start()
        self._running = job
        first = min(at for _c, _f, _a, at in job.calls)
        job.timer = loop.call_at(first + self.timeout, self._overdue, job)
        wait = self._last_run < STORE_GRACE
        self._jobs.put(job)
        if not (wait and job.ended.acquire(timeout=STORE_GRACE)):
            with job.handoff:
                job.posted = job.outcomes is None
            if job.posted:  # still running: the store thread posts its end to the loop
                return
        self._done(job, job.outcomes or [])

    def close(self) -> None:
        """Let the store thread end once its batch is over (drcs stopping)."""
        if self._jobs is not None:
            self._jobs.put(None)

    def _serve(self, jobs: queue.SimpleQueue[_Job | None], loop: asyncio.AbstractEventLoop) -> None:
        """The store thread: one batch at a time, each answered on the loop."""
        self._worker_thread = threading.get_ident()
        while (job := jobs.get()) is not None:
            began = time.perf_counter()
            try:
                outcomes = self._run(job)
            except BaseException as err:  # a bug outside the verbs: fail them, keep serving
                log.exception("the store thread failed a batch")
                outcomes = [(future, None, err) for _call, future, _a, _at in job.calls]
            self._last_run = time.perf_counter() - began
            with job.handoff:
                job.outcomes = outcomes
                if not job.posted:  # the loop is waiting, or has not stopped waiting yet
                    job.ended.release()
                    continue
            try:
                loop.call_soon_threadsafe(self._done, job, outcomes)
            except RuntimeError:  # the loop is closed: drcs is gone
                return

    def _run(self, job: _Job) -> list[Outcome]:
        """The batch's outcomes (on the store thread, or the loop when there is none); the
        audit lines of a batch's verbs are held in ``job.audit`` meanwhile, and written once
        it is over. A lone verb's are not held: its transaction is its own, so its lines
        (written after it, as the core writes them) follow its commit already."""
        if len(job.calls) == 1:
            return self._outcomes(job)
        _held_audit.local.records = job.audit
        try:
            return self._outcomes(job)
        finally:
            _held_audit.local.records = None
            job.write_audit()

    def _outcomes(self, job: _Job) -> list[Outcome]:
        calls = [(call, future) for call, future, _alone, _at in job.calls if not future.done()]
        if not calls:
            return []
        held = job.audit
        with self.store.guarded(job.guard):
            if len(job.calls) == 1:
                # Alone: its own transaction, as without grouping (no batch, no savepoint).
                call, future = calls[0]
                try:
                    return [(future, call(None), None)]
                except Exception as err:
                    return [(future, None, err)]
            outcomes: list[Outcome] = []
            contended: list[tuple[Callable[[Any], Any], asyncio.Future[Any]]] = []
            changed: list[tuple[int, int]] = []  # the audit lines of verbs that succeeded
            try:
                with self.store.batch() as batch:
                    for call, future in calls:
                        mark = len(held)
                        try:
                            outcomes.append((future, call(batch), None))
                            changed.append((mark, len(held)))
                        except Contended:  # another DRCS holds its lock: alone, below
                            del held[mark:]
                            contended.append((call, future))
                        except Exception as err:  # this verb only: its savepoint is undone
                            outcomes.append((future, None, err))
            except Exception as err:  # the commit failed: none of the batch happened
                log.error("a group of %d verbs failed to commit: %s", len(calls), err)
                job.events.clear()
                for start, end in reversed(changed):
                    del held[start:end]
                return [(future, None, err) for _call, future in calls]
            # After the commit, holding nothing: each waits for its locks in its own
            # transaction, so two groups never wait for each other (drc.store.sql).
            for call, future in contended:
                try:
                    outcomes.append((future, call(None), None))
                except Exception as err:
                    outcomes.append((future, None, err))
            return outcomes

    def _done(self, job: _Job, outcomes: list[Outcome]) -> None:
        """The store thread finished ``job`` (on the loop)."""
        if job.timer is not None:
            job.timer.cancel()
        self._running = None
        if job.soon:
            now = asyncio.get_running_loop().time()
            self._soon_log.append((now, now - job.began))
        if job.overdue and any(error is None for _f, _r, error in outcomes):
            log.error(
                "a batch answered 'outcome unknown' after %.1f s committed when the database "
                "woke (its COMMIT had been sent); node retries are answered from the record",
                time.time() - job.started,
            )
        self._settle(job, outcomes)
        if self._pending:
            self._turns_left = GATHER_TURNS if self._company else 0
            asyncio.get_running_loop().call_soon(self._flush)

    def _settle(self, job: _Job, outcomes: list[Outcome]) -> None:
        for listener, event in job.events:
            try:
                listener(*event)
            except Exception:
                log.exception("a change listener failed")
        job.events.clear()
        unreachable = next((e for _f, _r, e in outcomes if isinstance(e, StoreUnavailable)), None)
        if unreachable is not None:
            self.health.silent(job.started, unreachable.message)
        elif outcomes:
            self.health.answered()
        for future, result, error in outcomes:
            self._answer(future, result, error)
        if len(outcomes) < len(job.calls):  # calls cancelled before they ran: no answer
            for _call, future, _alone, _at in job.calls:
                self._then.pop(future, None)

    def _answer(
        self, future: asyncio.Future[Any], result: Any, error: BaseException | None
    ) -> None:
        """Set a call's future (unless its caller cancelled it) and tell its ``then``."""
        then = self._then.pop(future, None)
        if future.done():
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
        if then is not None:
            try:
                then(future)
            except Exception:
                log.exception("answering a call failed")

    def _overdue(self, job: _Job) -> None:
        """The running batch outlived its first caller's deadline (on the loop)."""
        if self._running is not job:
            return
        job.overdue = True
        self.health.silent(job.started, f"a transaction has waited {self.timeout:g} s")
        unknown = DrcError(
            Code.ECONNREFUSED,
            f"the database ({self.health.database}) has not answered for {self.timeout:g} s: "
            "the outcome of this request is unknown (rolled back unless its commit had "
            "reached the database); retry it, or check with 'drccli list'",
        )
        for _call, future, _alone, _at in job.calls:
            self._answer(future, None, unknown)
        refused = self.health.error()
        pending, self._pending = self._pending, []
        self._soon.clear()
        for _call, future, _alone, _at in pending:
            self._answer(future, None, refused)
