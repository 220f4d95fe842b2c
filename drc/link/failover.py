"""DRCC's upstream with fail-over: one link to one DRCS at a time, the next when it fails.

A node follows one DRCS of ``[link] servers``. When a call finds it dead (connection refused
or closed) or silent (no answer within the per-server timeout), the node moves to the next
server and the call is retried there, until the call's whole ``timeout`` is spent: callers
see a bounded pause, not an error. Mutating requests carry a ``rid`` that stays the same over
every retry, so DRCS runs each at most once (see :mod:`drc.link.protocol`). Errors DRCS
*answered* (EPERM, ENOSPC …) are final and never retried.

Several :class:`FailoverLink` objects (the calls and the change feed) share one
:class:`ServerChoice`, so the node follows one DRCS for everything and a failure seen by one
moves both.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from drc.core.errors import Code, DrcError
from drc.link.client import LinkClient

log = logging.getLogger(__name__)

#: Node verbs that change state: retried with the same rid so they act at most once.
MUTATING = frozenset(
    {
        "NodeHello",
        "NodeAcquire",
        "NodeAccess",
        "NodeGrant",
        "NodeRevoke",
        "NodeRelease",
        "NodeTokenReferences",
        "NodeJobsEnded",
        "NodeJobsEndedHere",
        "NodeProcessesExited",
    }
)
RETRY_PAUSE = 0.1  # seconds between two rounds over every server


class ServerChoice:
    """Which of the servers the node follows now; shared by the node's links."""

    def __init__(self, servers: Sequence[str]) -> None:
        if not servers:
            raise ValueError("no DRCS to follow")
        self.servers = list(servers)
        self.index = 0
        self.changed = time.monotonic()
        self.answering = True  # whether the server followed answered the last call made to it
        self.listeners: list[Callable[[str], None]] = []

    @property
    def current(self) -> str:
        return self.servers[self.index]

    def answered(self, index: int) -> None:
        if index == self.index:
            self.answering = True

    def failed(self, index: int, error: DrcError) -> None:
        """The server at ``index`` failed: move on, unless someone already did."""
        if index != self.index:
            return
        self.answering = False
        if len(self.servers) == 1:
            return
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
    """

    def __init__(
        self,
        choice: ServerChoice,
        make_client: Callable[[str], LinkClient],
        *,
        timeout: float,
        rid_prefix: str | None = None,
    ) -> None:
        self.choice = choice
        self.clients = [make_client(server) for server in choice.servers]
        self.timeout = timeout
        self._prefix = rid_prefix or os.urandom(6).hex()
        self._rids = itertools.count(1)
        self._closing: set[asyncio.Future[None]] = set()
        choice.listeners.append(self._moved)

    def _moved(self, server: str) -> None:
        """Another link of this node moved: drop ours to the old servers (a long poll waiting
        on a silent DRCS fails at once and is retried on the new one)."""
        for index, client in enumerate(self.clients):
            if index != self.choice.index:
                task = asyncio.ensure_future(client.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

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
        deadline = time.monotonic() + self.timeout
        last: DrcError | None = None
        while True:
            index = self.choice.index
            client = self.clients[index]
            left = deadline - time.monotonic()
            try:
                async with asyncio.timeout(max(left, 0.001)):
                    result = await client.call(method, args, rid=rid)
                self.choice.answered(index)
                return result
            except TimeoutError:
                last = DrcError(Code.ECONNREFUSED, f"{client.target}: no answer in time")
                await client.close()  # a late answer must not be mistaken for a later call's
                self.choice.failed(index, last)
            except DrcError as err:
                if err.code is not Code.ECONNREFUSED:
                    raise
                last = err
                self.choice.failed(index, err)
            if time.monotonic() + RETRY_PAUSE >= deadline:
                servers = ", ".join(self.choice.servers)
                raise DrcError(
                    Code.ECONNREFUSED,
                    f"no DRCS answered within {self.timeout:g} s (tried {servers}); last: "
                    f"{last.message if last else 'none'}",
                )
            if self.choice.index == index or len(self.choice.servers) == 1:
                await asyncio.sleep(RETRY_PAUSE)

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
