"""DRCC's upstream with fail-over: one link to one DRCS at a time, the next when it fails.

A node follows one DRCS of ``[link] servers``. When a call finds it dead (connection refused
or closed) or silent (no answer within the per-server timeout), the node moves to the next
server and the call is retried there, until the call's whole ``timeout`` is spent: callers
see a bounded pause, not an error. Mutating requests carry a ``rid`` that stays the same over
every retry, so DRCS runs each at most once (see :mod:`drc.link.protocol`). Errors DRCS
*answered* (EPERM, ENOSPC …) are final and never retried.

When no server answered in time, the one ECONNREFUSED says how each failed (refused, silent,
closed) and where to look. DRCC's own clients wait longer than this budget
(``drc.config.CLIENT_TIMEOUT``), so they hear that reason instead of blaming DRCC. A request
that asks DRCS more than once runs inside :func:`request_budget`: its calls share one deadline.

Several :class:`FailoverLink` objects (the calls and the change feed) share one
:class:`ServerChoice`, so the node follows one DRCS for everything and a failure seen by one
moves both.

A link may keep a *standby* (:meth:`FailoverLink.keep_standby`): its connection to the server
the node would move to next, opened and authenticated at a calm moment (a random one after
start) and then left idle. When the DRCS followed fails, thousands of nodes move to the next
at once: over standby links they send their first request at once, with no TCP connect and no
wait at the doorway of a DRCS busy with the others' connects (whose bounds stay what they are
for connections that have not authenticated), so the survivor serves moves, not connects.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

from drc.core.errors import Code, DrcError
from drc.export import verbs
from drc.link.client import LOCAL_MUNGE, Answered, LinkClient, LinkDown, Unsent
from drc.nodeverbs import NodeVerbs

log = logging.getLogger(__name__)

#: Node verbs that are exactly-once (declared with a ``replay`` answer): every attempt of one
#: request carries the same rid, so a retry after a lost answer acts at most once.
MUTATING = verbs(NodeVerbs, where=lambda m: m.replay is not None)
RETRY_PAUSE = 0.1  # seconds between two rounds over every server
#: Seconds (a random moment below it) after start before a node opens its standby link, and
#: after the standby link went (its DRCS died or restarted, the node moved) before it opens
#: one again: a cluster's nodes spread theirs instead of opening them in one burst.
STANDBY_DELAY = 30.0
#: Seconds of silence after which the kernel probes a standby link (TCP keepalive): a
#: standby DRCS whose host vanished is noticed without a frame, at no CPU cost to DRCS.
STANDBY_KEEPALIVE = 60
#: What opens and authenticates a standby link: answered on DRCS's event loop, no store work.
STANDBY_CALL = "ServerInfo"

#: How a link to the server the node left is closed under its calls (:meth:`FailoverLink._moved`).
MOVED = "this node moved to"

#: When the request being served must be answered (time.monotonic()); every upstream call made
#: for it ends by then, so a verb that asks DRCS twice still answers before its client gives up.
_request_deadline: ContextVar[float] = ContextVar("drc_request_deadline", default=math.inf)


class request_budget:  # named as used: ``with request_budget(5):``
    """Upstream calls made inside share one deadline, ``seconds`` from now (or an enclosing
    budget's, if earlier). A class, not a generator: every cache miss enters one."""

    __slots__ = ("seconds", "token")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        deadline = min(_request_deadline.get(), time.monotonic() + self.seconds)
        self.token = _request_deadline.set(deadline)

    def __exit__(self, *exc: object) -> None:
        _request_deadline.reset(self.token)


def _seconds(value: float) -> str:
    """5.0 -> "5", 0.39 -> "0.4": how long, as the admin reads it."""
    return f"{value:.1f}".removesuffix(".0")


def _host(server: str) -> str:
    return server.rsplit(":", 1)[0] if ":" in server else server


def no_server_answered(failures: dict[str, str], budget: float) -> DrcError:
    """One ECONNREFUSED naming how every server tried failed, and what to check."""
    tried = "; ".join(f"{server}: {reason}" for server, reason in failures.items())
    if all(reason.startswith(LOCAL_MUNGE) for reason in failures.values()):
        where = "munge.service on this node"
    else:
        hosts = ", ".join(dict.fromkeys(_host(s) for s in failures))
        where = f"drcs.service on {hosts} and the network from this node"
    return DrcError(
        Code.ECONNREFUSED,
        f"drcc could not reach DRCS: no DRCS answered within {_seconds(budget)} s ({tried}); "
        f"check {where}",
    )


class ServerChoice:
    """Which of the servers the node follows now; shared by the node's links."""

    def __init__(self, servers: Sequence[str]) -> None:
        if not servers:
            raise ValueError("no DRCS to follow")
        self.servers = list(servers)
        self.index = 0
        self.changed = time.monotonic()
        self.answering = True  # whether the server followed answered the last call made to it
        #: Whether the server the node last moved away from was alive: it answered an error
        #: (ECONNREFUSED: its store did not answer in time) rather than its link failing.
        self.left_alive = False
        #: How each server failed when the node last moved off it: the reason to give for a
        #: call whose attempt there was cut short by that move (its link closed under it).
        self.moved_off: dict[int, str] = {}
        self.listeners: list[Callable[[str], None]] = []

    @property
    def current(self) -> str:
        return self.servers[self.index]

    def answered(self, index: int) -> None:
        if index == self.index:
            self.answering = True

    def failed(self, index: int, error: DrcError, reason: str) -> None:
        """The server at ``index`` failed (how: ``reason``): move on, unless someone already
        did."""
        if index != self.index:
            return
        self.answering = False
        if len(self.servers) == 1:
            return
        self.left_alive = not isinstance(error, LinkDown)
        self.moved_off[index] = reason
        self.index = (index + 1) % len(self.servers)
        self.changed = time.monotonic()
        log.warning(
            "DRCS %s failed (%s); following %s now", self.servers[index], error, self.current
        )
        for listener in self.listeners:
            listener(self.current)


class FailoverLink:
    """``call(method, args)`` like :class:`LinkClient`, over one client per server.

    ``make_client(server)`` builds the :class:`LinkClient` of one ``host:port``; its own
    timeout bounds one attempt, ``timeout`` bounds the whole call.

    ``follow_moves=False`` (the change feed): a call that finds the node moved to another
    server fails with the error that moved it instead of being retried there, because what
    it asks (a long poll from a position in one DRCS's feed) means nothing to another DRCS;
    its caller starts afresh on the new one (NodeMoved). It is still retried on the same
    server while the node stays (one server, or another link moved first and back).
    """

    def __init__(
        self,
        choice: ServerChoice,
        make_client: Callable[[str], LinkClient],
        *,
        timeout: float,
        rid_prefix: str | None = None,
        follow_moves: bool = True,
    ) -> None:
        self.choice = choice
        self.follow_moves = follow_moves
        self.clients = [make_client(server) for server in choice.servers]
        self.timeout = timeout
        self._prefix = rid_prefix or os.urandom(6).hex()
        self._rids = itertools.count(1)
        self._closing: set[asyncio.Future[None]] = set()
        self._standby_moved: asyncio.Event | None = None  # set when the node moves
        self._retrying: set[asyncio.Task[list[Any]]] = set()  # send()'s calls retried
        choice.listeners.append(self._moved)

    def _moved(self, server: str) -> None:
        """Another link of this node moved: drop ours to the old servers (a long poll waiting
        on a silent DRCS fails at once and is retried on the new one). Not when the server
        left answered (its store was slow): its connection is sound, and a node that comes
        back (after a fail-over burst, to the only live DRCS) needs no new connection, with
        its authentication and its place at the doorway; its poll there ends within the
        heartbeat, and the feed then moves."""
        if self._standby_moved is not None:
            self._standby_moved.set()  # the next server is another one now
        if self.choice.left_alive:
            return
        for index, client in enumerate(self.clients):
            if index != self.choice.index:
                task = asyncio.ensure_future(client.close(f"{MOVED} {server}"))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    @property
    def standby_index(self) -> int | None:
        """The server the node would move to next (None: there is only one)."""
        count = len(self.choice.servers)
        return None if count == 1 else (self.choice.index + 1) % count

    async def open_standby(self) -> bool:
        """Open and authenticate the link to the server the node would move to next, and
        keep it (module doc); True when that server answered. One request does it, answered
        on that DRCS's event loop (:data:`STANDBY_CALL`); the kernel then probes the idle
        connection (:data:`STANDBY_KEEPALIVE`)."""
        index = self.standby_index
        if index is None:
            return False
        client = self.clients[index]
        if not client.connected:
            try:
                await client.call(STANDBY_CALL)
            except DrcError as e:
                log.debug("no standby link to %s: %s", self.choice.servers[index], e)
                return False
        client.keepalive(STANDBY_KEEPALIVE)
        return True

    async def keep_standby(self, delay: float = STANDBY_DELAY) -> None:
        """Hold a standby link open until cancelled: opened at a random moment within
        ``delay`` seconds, and again within ``delay`` seconds of finding it gone (its DRCS
        died or restarted, or the node moved and the next server is another one). A node
        whose standby DRCS is down keeps following its own; it tries again later."""
        if self.standby_index is None:
            return
        moved = self._standby_moved = asyncio.Event()
        while True:
            await asyncio.sleep(random.uniform(0, delay))
            moved.clear()
            if not await self.open_standby():
                continue
            index = self.standby_index
            assert index is not None
            closed = asyncio.ensure_future(self.clients[index].until_closed())
            changed = asyncio.ensure_future(moved.wait())
            try:
                await asyncio.wait((closed, changed), return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                changed.cancel()

    @property
    def target(self) -> str:
        return self.clients[self.choice.index].target

    def new_rid(self) -> str:
        return f"{self._prefix}-{next(self._rids)}"

    async def call(
        self, method: str, args: list[Any] | tuple[Any, ...] = (), *, rid: str | None = None
    ) -> list[Any]:
        if rid is None and method in MUTATING:
            rid = self.new_rid()
        start, deadline = self._deadline()
        return await self._attempts(method, args, rid, start, deadline)

    def send(self, method: str, args: list[Any], answered: Answered) -> bool:
        """:meth:`call`'s fast lane, for a verb that needs no ``rid``: its first attempt goes
        now, on the open link to the server followed (:meth:`LinkClient.send`), and
        ``answered(ok, None)`` or ``answered(None, error)`` hears it in the loop turn that
        reads the answer. An attempt that fails as :meth:`call` would retry it goes on as
        :meth:`call` does (in a task, within the same deadline) and ``answered`` hears how
        that ends. False: nothing was sent (no link open yet); :meth:`call` it."""
        if method in MUTATING:
            return False
        start, deadline = self._deadline()
        index = self.choice.index

        def first(ok: list[Any] | None, error: BaseException | None) -> None:
            if error is None:
                self.choice.answered(index)
                answered(ok, None)
            elif isinstance(error, DrcError) and error.code is not Code.ECONNREFUSED:
                answered(None, error)  # DRCS's answer: final, as call() raises it
            else:
                failed = None if isinstance(error, Unsent) else (index, start, error)
                retried = asyncio.ensure_future(
                    self._attempts(method, args, None, start, deadline, failed)
                )
                self._retrying.add(retried)
                retried.add_done_callback(self._retrying.discard)
                retried.add_done_callback(functools.partial(_tell, answered))

        until = asyncio.get_running_loop().time() + (deadline - start)
        return self.clients[index].send(method, list(args), first, until=until)

    def _deadline(self) -> tuple[float, float]:
        """(now, when a call starting now must end): this link's timeout, or the request's
        budget if that ends first (:class:`request_budget`)."""
        start = time.monotonic()
        return start, min(start + self.timeout, _request_deadline.get())

    async def _attempts(
        self,
        method: str,
        args: list[Any] | tuple[Any, ...],
        rid: str | None,
        start: float,
        deadline: float,
        failed: tuple[int, float, BaseException] | None = None,
    ) -> list[Any]:
        """Attempts on the server followed (the next one's, once it fails) until one answers
        or ``deadline`` comes. ``failed``: (server index, when it began, error) of an attempt
        already made (:meth:`send`'s)."""
        failures: dict[str, str] = {}  # server -> how it failed last, in the order first tried
        while True:
            if failed is None:
                index = self.choice.index
                attempt = time.monotonic()
                try:
                    # the attempt's deadline rides on the client's own timer (one per call)
                    within = max(deadline - attempt, 0.001)
                    result = await self.clients[index].call(method, args, rid=rid, within=within)
                    self.choice.answered(index)
                    return result
                except (TimeoutError, DrcError) as err:
                    failed = (index, attempt, err)
            await self._failed(*failed, failures, start, deadline)
            failed = None

    async def _failed(
        self,
        index: int,
        attempt: float,
        err: BaseException,
        failures: dict[str, str],
        start: float,
        deadline: float,
    ) -> None:
        """An attempt on server ``index`` failed with ``err``: raise what the call fails
        with, or return once it is time for the next attempt."""
        client, server = self.clients[index], self.choice.servers[index]
        if isinstance(err, TimeoutError):  # the deadline ended this attempt early
            reason = f"no answer within {_seconds(time.monotonic() - attempt)} s"
            failures.setdefault(server, reason)  # a full attempt's reason says more
            if deadline < start + self.timeout:
                # The request's budget ran out (earlier calls of it took the time), not
                # this call's: the server may be fine, and other calls share its link.
                raise no_server_answered(failures, deadline - start)
            error = DrcError(Code.ECONNREFUSED, f"{client.target}: {reason}")
            # A late answer must not be mistaken for a later call's; calls pipelined on
            # the same connection learn why it went.
            await client.close(reason)
        else:
            if not isinstance(err, DrcError) or err.code is not Code.ECONNREFUSED:
                raise err
            reason, error = getattr(err, "reason", err.message), err
            if reason.startswith(MOVED):  # another call moved the node off it meanwhile
                reason = self.choice.moved_off.get(index, reason)
            failures[server] = reason
        self.choice.failed(index, error, reason)
        if not self.follow_moves and self.choice.index != index:
            raise error
        if time.monotonic() + RETRY_PAUSE >= deadline:
            raise no_server_answered(failures, deadline - start)
        if self.choice.index == index or len(self.choice.servers) == 1:
            await asyncio.sleep(RETRY_PAUSE)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


def _tell(answered: Answered, retried: asyncio.Task[list[Any]]) -> None:
    """``answered`` hears how the retries of a :meth:`FailoverLink.send` ended."""
    if retried.cancelled():
        answered(None, asyncio.CancelledError())
    elif (error := retried.exception()) is not None:
        answered(None, error)
    else:
        answered(retried.result(), None)
