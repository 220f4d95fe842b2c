"""Exactly-once link requests in the store: the request id is recorded in the transaction of
the change it made, or not at all."""

from __future__ import annotations

import pytest

from drc.core.errors import DrcError
from drc.core.service import CredentialService
from drc.store import requests

from helpers import ALICE, in_job


@pytest.fixture(autouse=True)
def no_request_left_behind():
    token = requests.CURRENT.set(None)
    yield
    requests.CURRENT.reset(token)


def serving(rid: str, method: str, args: list) -> requests.RequestRecord:
    record = requests.RequestRecord(rid, method, requests.digest(method, args))
    requests.CURRENT.set(record)
    return record


def test_a_committed_request_is_replayed_not_run_again(service: CredentialService):
    owner = in_job(ALICE, 10)
    record = serving("n1-a-1", "NodeAcquire", [{"job": 10}, 0])
    cred = service.acquire(owner, 0)
    assert record.recorded and record.credential == cred.id
    assert requests.CURRENT.get() is None  # one transaction per request records it
    serving("n1-a-1", "NodeAcquire", [{"job": 10}, 0])
    with pytest.raises(requests.Replayed) as done:
        service.acquire(owner, 0)
    assert done.value.same and done.value.credential == cred.id
    assert [c.id for c in service.list(owner)] == [cred.id]  # not a second credential
    serving("n1-a-1", "NodeAcquire", [{"job": 10}, 1])  # same id, other contents
    with pytest.raises(requests.Replayed) as other:
        service.acquire(owner, 0)
    assert not other.value.same


def test_a_failed_request_records_nothing_and_may_be_retried(service: CredentialService):
    owner = in_job(ALICE, 10)
    serving("n1-b-1", "NodeRelease", [{"job": 10}, 99])
    with pytest.raises(DrcError):
        service.release(owner, 99)  # no such credential: the transaction rolled back
    with service.store.snapshot() as tx:
        rows = tx.db.execute_sql('SELECT COUNT(*) FROM "link_request"').fetchall()
    assert rows == [(0,)]
    record = serving("n1-b-1", "NodeAcquire", [{"job": 10}, 0])
    service.acquire(owner, 0)
    assert record.recorded
