"""Group commit: verbs that reach DRCS's event loop in the same turn share one transaction.

A storm of small requests (cache misses from thousands of nodes, many drccli/D-Bus callers)
is a storm of tiny transactions, each paying its own commit (on SQLite an fsync: about half
of a small verb's store time). :class:`GroupCommit` runs the verbs that are waiting together
inside one ``store.batch()`` transaction, each in its own savepoint (a refused verb undoes
only itself), and answers them all after the one commit: nothing is acknowledged before it
is durable. A lone verb runs as it would alone.

Callers that each wait for their answer before sending the next request (D-Bus clients, node
daemons) come back spread over a few event-loop turns, not in one. When the last batch had
company, the next one waits :data:`GATHER_TURNS` more turns before it runs (the loop polls its
sockets every turn, some microseconds each), so callers that arrived meanwhile join it: fewer
commits. A caller that was alone last time never waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

log = logging.getLogger("drc.server")

T = TypeVar("T")

#: Extra event-loop turns a batch waits for more callers when the previous batch had company.
#: Two: a call that arrives during a turn is read in the next and reaches the group in the one
#: after. Measured with bench/bench_drcs.py: batches of 1.85 -> 2.44 verbs, DRCS CPU per
#: acquire+release ~4% lower.
GATHER_TURNS = 2


class GroupCommit:
    """Run the calls waiting together inside one ``store.batch()``.

    Only for calls whose whole effect is in the database: a call that also changes
    something outside it (an external cleanup after a free) must commit on its own first.
    """

    def __init__(self, store: Any, max_batch: int = 256) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []
        self._company = False  # whether the last batch held more than one call
        self._turns_left = 0

    def submit(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """A future of ``call()``'s result, set after its batch commits. A future, not a
        coroutine: the bus exporter and the link answer from its done callback, without a
        task per call."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((call, future))
        if len(self._pending) == 1:
            self._turns_left = GATHER_TURNS if self._company else 0
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        if self._turns_left and len(self._pending) < self.max_batch:
            self._turns_left -= 1
            asyncio.get_running_loop().call_soon(self._flush)  # let the loop read once more
            return
        batch = self._pending[: self.max_batch]
        self._company = len(batch) > 1
        self._pending = self._pending[self.max_batch :]
        if self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        if len(batch) == 1:
            # Alone: its own transaction, as without grouping (no batch, no savepoint).
            call, future = batch[0]
            try:
                result = call()
            except Exception as err:
                if not future.done():
                    future.set_exception(err)
                return
            if not future.done():
                future.set_result(result)
            return
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            with self.store.batch():
                for call, future in batch:
                    try:
                        outcomes.append((future, call(), None))
                    except Exception as err:  # this verb only: its savepoint is undone
                        outcomes.append((future, None, err))
        except Exception as err:  # the commit failed: none of the batch happened
            log.error("a group of %d verbs failed to commit: %s", len(batch), err)
            outcomes = [(future, None, err) for _call, future in batch]
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
