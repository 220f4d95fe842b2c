"""Exactly-once link requests in the store (table ``link_request``, migration 0004).

The link exporter makes a :class:`~drc.core.ports.Request` of the request it is serving, and
the verb hands it (in its :class:`~drc.core.ports.Unit`) to the write transaction of its
change, which claims the ``rid`` right after taking the write lock (one INSERT that does
nothing when the id exists: then :class:`Replayed` is raised and the transaction rolls back)
and, for an acquire, notes the credential it created before committing. So "the change
happened" and "the request is recorded" are one fact: a DRCS killed at any instant leaves both
or neither, and a retry on another DRCS finds the record.
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import time
from typing import Any

from peewee import Database

from drc.core.ports import Request
from drc.store.statements import literal, run

#: How long a request id is remembered: far beyond any client's retry window.
KEEP_SECONDS = 24 * 3600
#: The share of claims that also forget the ids older than that (one DELETE, at random: no
#: clock or counter to keep, and the table stays about a day of requests long).
FORGET_CHANCE = 0.01


class Replayed(Exception):
    """The request id was committed before: the transaction rolled back, nothing ran again.

    ``same`` is False when the id was used for a *different* request.
    """

    def __init__(self, rid: str, same: bool, method: str, credential: int) -> None:
        super().__init__(f"request {rid} was already committed")
        self.rid, self.same, self.method, self.credential = rid, same, method, credential


def digest(method: str, args: list[Any]) -> str:
    """What a request asks, canonically: a retry must match it exactly."""
    text = _CANONICAL.encode([method, args])
    return hashlib.sha256(text.encode()).hexdigest()


#: :func:`digest`'s encoder, made once (``json.dumps`` with options builds one per call).
_CANONICAL = json.JSONEncoder(separators=(",", ":"), sort_keys=True, default=str)


@functools.cache
def _compiled(text: str, param: str) -> str:
    return text.replace("?", param)


def _sql(db: Database, text: str) -> str:
    return _compiled(text, db.param)


_CLAIM = (
    'INSERT INTO "link_request" ("rid", "digest", "method", "credential", "created") '
    'VALUES (?, ?, ?, 0, ?) ON CONFLICT ("rid") DO NOTHING'
)


def claim(db: Database, record: Request, now: float | None = None) -> None:
    """Record the request in the transaction about to make its change (under the write lock);
    :class:`Replayed` when ``record.rid`` was committed before. Now and then forget old ids."""
    now = time.time() if now is None else now
    cursor = run(db, _sql(db, _CLAIM), (record.rid, record.digest, record.method, now))
    claimed(db, record, cursor.rowcount > 0, now)


def claim_literal(db: Database, record: Request, now: float) -> str:
    """PostgreSQL: :func:`claim`'s INSERT with its values quoted in, to be sent in one round
    trip with other statements; :func:`claimed` then reads its outcome."""
    return literal(db, _sql(db, _CLAIM), (record.rid, record.digest, record.method, now))


def claimed(db: Database, record: Request, inserted: bool, now: float) -> None:
    """The claim's outcome: ``inserted`` False means the id was recorded before
    (:class:`Replayed`, after reading what that request was)."""
    if not inserted:
        rows = db.execute_sql(
            _sql(db, 'SELECT "digest", "method", "credential" FROM "link_request" WHERE "rid" = ?'),
            (record.rid,),
        ).fetchall()
        found_digest, method, credential = rows[0]
        raise Replayed(record.rid, found_digest == record.digest, method, credential)
    record.recorded = True
    if random.random() < FORGET_CHANCE:
        db.execute_sql(
            _sql(db, 'DELETE FROM "link_request" WHERE "created" < ?'), (now - KEEP_SECONDS,)
        )


def created(db: Database, record: Request, credential: int) -> None:
    """The request created ``credential`` (what a retried acquire answers)."""
    record.credential = credential
    db.execute_sql(
        _sql(db, 'UPDATE "link_request" SET "credential" = ? WHERE "rid" = ?'),
        (credential, record.rid),
    )
