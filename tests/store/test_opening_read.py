"""PostgreSQL: a transaction holding credentials shared (an access) reads them in its opening
round trip, after their locks; the verb's first read answers from those rows only while no
statement ran in between, and every later read asks the database again."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drc.core.model import Flags, State
from drc.core.service import CredentialService
from drc.providers.pool import PoolProvider
from drc.store.sql import PeeweeStore

from helpers import ALICE, in_job, statements_run


@pytest.fixture
def service(postgresql_url: str) -> Iterator[CredentialService]:
    store = PeeweeStore.from_url(postgresql_url)
    yield CredentialService(store, PoolProvider(cookie_min=1000, cookie_max=1099, ptag=7))
    store.close()


def test_the_first_read_answers_from_the_opening_round_trip(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), int(Flags.FLEX_CREDENTIAL)).id
    store = service.store
    with store.transaction(hold=[cred, cred + 1]) as tx, statements_run(store.db) as sent:
        first = tx.get_credential(cred, count_refs=False)
        assert sent == []  # read with the locks
        assert first is not None and first.id == cred and first.state is State.ACTIVE
        again = tx.get_credential(cred, count_refs=False)
        assert again == first and len(sent) == 1  # a second read asks again
    with store.transaction(hold=[cred + 1]) as tx, statements_run(store.db) as sent:
        assert tx.get_credential(cred + 1, count_refs=False) is None  # none: read as none
        assert sent == []


def test_a_statement_in_between_makes_the_read_ask_again(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0).id
    with service.store.transaction(hold=[cred]) as tx:
        tx.set_state(cred, State.RELEASED)
        assert tx.get_credential(cred, count_refs=False).state is State.RELEASED


def test_counted_and_exclusive_reads_are_not_preloaded(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0).id
    store = service.store
    with store.transaction(hold=[cred]) as tx, statements_run(store.db) as sent:
        assert tx.get_credential(cred).refs == 1  # counted: its own statement
        assert len(sent) == 1
    with store.transaction(hold=[cred], exclusive=True) as tx, statements_run(store.db) as sent:
        assert tx.get_credential(cred, count_refs=False) is not None
        assert len(sent) == 1  # a release's lock is exclusive: nothing read with it
