"""Exactly-once link requests in the store: the request id is recorded in the transaction of
the change it made, or not at all."""

from __future__ import annotations

import pytest

from drc.core.errors import DrcError
from drc.core.ports import Request, Unit
from drc.core.service import CredentialService
from drc.store import requests

from helpers import ALICE, in_job


def serving(rid: str, method: str, args: list) -> Unit:
    """The unit a verb serving this link request runs in (no batch)."""
    return Unit(Request(rid, method, requests.digest(method, args)))


def test_a_committed_request_is_replayed_not_run_again(service: CredentialService):
    owner = in_job(ALICE, 10)
    unit = serving("n1-a-1", "NodeAcquire", [{"job": 10}, 0])
    cred = service.acquire(owner, 0, unit)
    assert unit.request.recorded and unit.request.credential == cred.id
    with pytest.raises(requests.Replayed) as done:
        service.acquire(owner, 0, serving("n1-a-1", "NodeAcquire", [{"job": 10}, 0]))
    assert done.value.same and done.value.credential == cred.id
    assert [c.id for c in service.list(owner)] == [cred.id]  # not a second credential
    with pytest.raises(requests.Replayed) as other:  # same id, other contents
        service.acquire(owner, 0, serving("n1-a-1", "NodeAcquire", [{"job": 10}, 1]))
    assert not other.value.same


def test_a_failed_request_records_nothing_and_may_be_retried(service: CredentialService):
    owner = in_job(ALICE, 10)
    with pytest.raises(DrcError):  # no such credential: the transaction rolled back
        service.release(owner, 99, serving("n1-b-1", "NodeRelease", [{"job": 10}, 99]))
    with service.store.snapshot() as tx:
        rows = tx.db.execute_sql('SELECT COUNT(*) FROM "link_request"').fetchall()
    assert rows == [(0,)]
    unit = serving("n1-b-1", "NodeAcquire", [{"job": 10}, 0])
    service.acquire(owner, 0, unit)
    assert unit.request.recorded
