"""Callers as the transports would build them, for tests of the core."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from peewee import Database

from drc.core.model import Caller, Holder
from drc.link import LinkPeer, LinkServer
from drc.link.server import Later
from drc.store import requests
from drc.store.database import MIGRATIONS

T = TypeVar("T")

ALICE, BOB, CAROL = 2001, 2002, 2003
STAFF = 3000  # a group bob is in


def in_job(
    uid: int, job: int, node: str = "n1", gid: int | None = None, gids: frozenset[int] = frozenset()
) -> Caller:
    return Caller(
        uid=uid,
        gid=uid if gid is None else gid,
        gids=gids,
        job=job,
        holder=Holder.for_job(node, job),
    )


def in_process(uid: int, pid: int, node: str = "n1", start: int = 100) -> Caller:
    return Caller(uid=uid, gid=uid, pid=pid, holder=Holder.for_process(node, pid, start))


def direct(uid: int, gids: frozenset[int] = frozenset()) -> Caller:
    return Caller(uid=uid, gid=uid, gids=gids, holder=Holder.pin(uid))


ROOT = Caller(uid=0, gid=0, holder=Holder.pin(0))


def migrations_after(name: str = "") -> list[str]:
    """Names of the schema migrations after ``name``, in order (all of them for "")."""
    return sorted(p.stem for p in MIGRATIONS.glob("[0-9]*.py") if p.stem > name)


#: The schema version a freshly migrated store reports.
LATEST_MIGRATION = migrations_after()[-1]


def run_bounded(coro: Awaitable[T], timeout: float = 30) -> T:
    """Run an async test body with a hard upper bound, so a bug can't hang the suite."""

    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


@contextmanager
def statements_run(db: Database) -> Iterator[list[str]]:
    """The SQL text of each statement ``db`` runs in this thread inside the block (BEGIN and
    COMMIT are not statements there).

    Counted on that database object, not from peewee's shared logger: another store's
    statement (a thread a test left, a transaction finalised by the garbage collector) is
    not this code's. A claim's occasional forgetting of old request ids (one claim in a
    hundred, at random: :data:`drc.store.requests.FORGET_CHANCE`) is held off meanwhile: a
    count must not depend on chance. Nor are PostgreSQL's PREPAREs counted: one per
    statement and connection, before the transaction after the statement's first run
    (:func:`drc.store.statements.prepare_waiting`), they are no verb's."""
    sent: list[str] = []
    me = threading.get_ident()

    def hook(event) -> None:
        if threading.get_ident() == me and not event.sql.startswith("PREPARE drc_"):
            sent.append(event.sql)

    chance, requests.FORGET_CHANCE = requests.FORGET_CHANCE, 0.0
    db.query_hooks.append(hook)
    try:
        yield sent
    finally:
        db.query_hooks.remove(hook)
        requests.FORGET_CHANCE = chance


def link_handled(
    server: LinkServer, peer: LinkPeer, method: str, args: list[Any], rid: str | None = None
) -> asyncio.Future[Any]:
    """What ``server``'s handler answers ``method(*args)``, as the link would send it: at once,
    from its future, or through ``then`` (a server that answers later). The handler runs now,
    as when the link reads the request."""
    answered = asyncio.get_running_loop().create_future()

    def then(out: Any, error: BaseException | None) -> None:
        if error is None:
            answered.set_result(out)
        else:
            answered.set_exception(error)

    extra = (then,) if server.answers_later else ()
    try:
        reply = server.handler(peer, method, args, rid, *extra)
    except Exception as error:
        then(None, error)
        return answered
    if isinstance(reply, Later):
        return answered
    if asyncio.isfuture(reply) or asyncio.iscoroutine(reply):
        return asyncio.ensure_future(reply)
    then(reply, None)
    return answered
