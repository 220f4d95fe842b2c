"""The verbs' hot paths in the store: how many statements each verb runs, and that the
hand-written statements behave like the Peewee queries they replaced.

The statement counts are pinned exactly: one more statement per verb is a regression to
look at, not noise. PostgreSQL runs the locks the verb takes besides (one for most verbs: the
credential's row, or for an acquire the limits' shared lock; an acquire under a limit also
locks what it counts), sent with its first statement in one round trip, and one NOTIFY in a
transaction that revokes or frees (the change feed all DRCS share).
``test_postgresql.py`` runs this module again over PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

import pytest
from peewee import PostgresqlDatabase

from drc.core.errors import DrcError
from drc.core.model import (
    UINT32_MAX,
    Credential,
    Flags,
    Holder,
    LimitScope,
    Resources,
    State,
    Target,
    TargetKind,
)
from drc.core.ports import Transaction
from drc.core.service import CredentialService
from drc.store.sql import PeeweeStore
from drc.store.statements import run

from helpers import ALICE, BOB, ROOT, direct, in_job, statements_run


def statements(fn: Callable[[], object], store: PeeweeStore) -> list[str]:
    """The SQL of every statement ``fn`` runs on ``store``'s database."""
    with statements_run(store.db) as sent:
        fn()
    return sent


def assert_statements(
    fn: Callable[[], object],
    store: PeeweeStore,
    expected: int,
    notifies: int = 0,
    locks: int = 1,
    *,
    held: bool = True,
) -> None:
    """``expected`` round trips (statements, on SQLite); on PostgreSQL also the verb's
    ``notifies``, and its ``locks``: those it holds from the start (``held``, the credentials
    it names) go with its first statement, in front of it, where those it takes as it goes
    (an acquire's limits) are statements of their own."""
    postgresql = isinstance(store.db, PostgresqlDatabase)
    sql = statements(fn, store)
    extra = notifies + (0 if held else locks) if postgresql else 0
    assert len(sql) == expected + extra, "\n".join(sql)
    if postgresql:
        assert sql[0].count("; ") == (locks if held else 0), sql[0]


def test_acquire_with_a_limit_and_a_new_slot_runs_seven_statements(service: CredentialService):
    """limits, usage, next id, free slot (none), extend the pool, insert, owner reference;
    on PostgreSQL the limits' lock and the lock of the uid's count before them."""
    service.set_limit(ROOT, LimitScope.UID, ALICE, 10)
    owner = in_job(ALICE, 10)
    service.acquire(owner, 0)
    assert_statements(lambda: service.acquire(owner, 0), service.store, 7, locks=2, held=False)


def test_acquire_reusing_a_freed_slot_without_limits_runs_five_statements(service):
    """limits (none, so no usage), next id, take the free slot, insert, owner reference."""
    owner = in_job(ALICE, 10)
    service.release(owner, service.acquire(owner, 0).id)
    assert_statements(lambda: service.acquire(owner, 0), service.store, 5, held=False)


def test_grant_runs_two_statements(service: CredentialService):
    """The credential (with grants and references), then the grant's insert."""
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, 0).id
    target = Target(TargetKind.UID, BOB)
    assert_statements(lambda: service.grant(owner, cred, target), service.store, 2)


def test_access_runs_three_statements_miss_or_hit(service: CredentialService):
    """The credential, the node's tenants (not FLEX), the insert that does nothing when the
    holder holds a reference: no lookup of the holder, whose time grew with the credential's
    references on PostgreSQL (a generic plan on another index of the reference table)."""
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, 0).id
    service.grant(owner, cred, Target(TargetKind.UID, BOB))
    peer = in_job(BOB, 20, node="n2")
    assert_statements(lambda: service.access(peer, cred), service.store, 3)
    assert_statements(lambda: service.access(peer, cred), service.store, 3)


def test_a_refused_holder_that_holds_a_reference_keeps_access(service: CredentialService):
    """The rules are asked first; only a refusal asks whether the holder holds a reference,
    and one that does keeps its access (no second audit line, no second reference)."""
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, 0).id
    bob = Target(TargetKind.UID, BOB)
    service.grant(owner, cred, bob)
    peer = in_job(BOB, 20, node="n2")
    service.access(peer, cred)
    service.revoke(owner, cred, bob)  # the ACL refuses bob now; his reference stays
    assert_statements(lambda: service.access(peer, cred), service.store, 2)  # read, has-ref
    with pytest.raises(DrcError):
        service.access(in_job(BOB, 20, node="n3"), cred)  # no reference there: refused
    assert service.get(owner, cred).refs == 2


def test_access_miss_does_not_count_references_but_listing_does(service: CredentialService):
    """Counting a credential's references scans all of them, so a miss never does: an access
    storm would slow down as the credential gains nodes. get/list still count exactly."""
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id
    service.grant(owner, cred, Target(TargetKind.UID, BOB))
    for node in ("n2", "n3"):
        service.access(in_job(BOB, 20, node=node), cred)
    sql = statements(
        lambda: service.access_credential(in_job(BOB, 20, node="n4"), cred), service.store
    )
    assert not [s for s in sql if "COUNT(" in s.upper()], "\n".join(sql)
    assert service.access_credential(in_job(BOB, 20, node="n5"), cred).refs == 0
    with service.store.snapshot() as tx:
        assert tx.get_credential(cred).refs == 5  # owner's job + n2..n5
        assert tx.get_credential(cred, count_refs=False).refs == 0
        assert tx.get_credential(cred, count_refs=False) == replace(tx.get_credential(cred), refs=0)
        assert [c.refs for c in tx.list_credentials([cred])] == [5]


def test_release_of_the_last_reference_runs_eight_statements(service: CredentialService):
    """The credential, drop the holder's and the pin's reference, mark RELEASED, count, load
    what is freed, return its slot, delete the credential (its grants by cascade)."""
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, 0).id
    service.grant(owner, cred, Target(TargetKind.UID, BOB))
    assert_statements(lambda: service.release(owner, cred), service.store, 8, notifies=1)
    with service.store.snapshot() as tx:
        assert tx.models.grant.select().count() == 0
    assert service.list(ROOT) == []


def set_counter(store: PeeweeStore, last: int) -> None:
    """Make ``last`` the last credential id handed out (PostgreSQL's is a sequence)."""
    with store.transaction():
        if isinstance(store.db, PostgresqlDatabase):
            store.db.execute_sql("SELECT setval('credential_id', %s)", (last,))
        else:
            counter = store.models.counter
            counter.update(value=last).where(counter.name == "credential").execute()


def test_ids_skip_live_credentials_after_the_counter_wraps(service: CredentialService):
    first, second = (service.acquire(direct(ALICE), 0).id for _ in range(2))
    assert (first, second) == (1, 2)
    set_counter(service.store, UINT32_MAX - 1)
    assert service.acquire(direct(ALICE), 0).id == UINT32_MAX
    assert service.acquire(direct(ALICE), 0).id == 3  # 1 and 2 are still alive
    service.release(direct(ALICE), first)
    set_counter(service.store, UINT32_MAX)
    assert service.acquire(direct(ALICE), 0).id == 1  # freed, so reused after the wrap


def test_grants_and_references_are_associations(store: PeeweeStore):
    """Adding twice answers False; a grant for a missing credential too, and the transaction
    stays usable (no constraint error poisons it on PostgreSQL)."""
    bob = Target(TargetKind.UID, BOB)
    holder = Holder.for_job("n1", 10)
    with store.transaction() as tx:
        cid = tx.next_credential_id()
        _insert(tx, cid)
        assert tx.add_grant(cid + 1, bob) is False
        assert tx.add_grant(cid, bob) is True
        assert tx.add_grant(cid, bob) is False
        assert tx.add_reference(cid, holder, owner=True) is True
        assert tx.add_reference(cid, holder, owner=False) is False
        assert tx.has_reference(cid, holder)
        assert tx.reference_counts([cid, cid + 1]) == {cid: (1, 1), cid + 1: (0, 0)}
        assert tx.drop_reference(cid, holder) is True
        assert tx.drop_reference(cid, holder) is False
        assert not tx.has_reference(cid, holder)
        assert tx.remove_grant(cid, bob) is True
        assert tx.remove_grant(cid, bob) is False


def _insert(tx: Transaction, cid: int) -> None:
    tx.insert_credential(
        Credential(
            id=cid,
            uid=ALICE,
            gid=ALICE,
            wlm=10,
            flags=Flags.NONE,
            state=State.ACTIVE,
            resources=Resources("pool", 1000 + cid, 0, 7, str(cid)),
            created=1.5,
        )
    )


def test_loading_by_ids_matches_loading_everything(service: CredentialService):
    """The one-statement load (IN lists padded, chunked past 500 ids) and the three-query
    listing agree on every field, grants and reference counts included."""
    owner = in_job(ALICE, 10)
    ids = [service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id for _ in range(5)]
    service.grant(owner, ids[1], Target(TargetKind.UID, BOB))
    service.grant(owner, ids[1], Target(TargetKind.GID, 7))
    service.access(in_job(BOB, 20), ids[1])
    service.access(in_job(BOB, 20, node="n2"), ids[1])
    with service.store.snapshot() as tx:
        everything = {c.id: c for c in tx.list_credentials()}
        some = tx.list_credentials([ids[4], ids[1], ids[2]])
        assert some == [everything[ids[1]], everything[ids[2]], everything[ids[4]]]
        assert some[0].refs == 3 and len(some[0].grants) == 2
        many = tx.list_credentials([*range(10_000, 10_600), *ids])
        assert many == [everything[i] for i in ids]
        assert tx.get_credential(ids[1]) == everything[ids[1]]
        assert tx.get_credential(10_000) is None
        assert tx.list_credentials([]) == []


def test_pool_slots_lowest_free_first_never_past_capacity(store: PeeweeStore):
    with store.transaction() as tx:
        assert [tx.claim_slot("p", 3) for _ in range(4)] == [0, 1, 2, None]
        tx.return_slot("p", 2)
        tx.return_slot("p", 0)
        assert tx.slots_in_use("p") == 1
        assert tx.claim_slot("p", 2) == 0
        assert tx.claim_slot("p", 2) is None  # slot 2 is free but not below the capacity
        assert tx.claim_slot("p", 3) == 2
        assert tx.claim_slot("q", 0) is None
        assert tx.slots_in_use("p") == 3


def test_each_thread_keeps_its_own_cursor_for_the_direct_statement_path(tmp_path) -> None:
    """The direct path (:func:`drc.store.statements.run`) keeps one cursor per connection in
    the thread's own connection state: two threads running statements in turn each keep
    theirs, on their own connection, and neither replaces the other's."""
    store = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db")
    db = store.db
    seen: dict[str, list[object]] = {"main": [], "other": []}
    turn = [threading.Event(), threading.Event()]

    def take_turns(who: str, mine: threading.Event, theirs: threading.Event) -> None:
        db.connect(reuse_if_open=True)
        try:
            for _ in range(3):
                mine.wait(5)
                mine.clear()
                cursor = run(db, "SELECT 1")
                assert cursor.fetchall() == [(1,)]
                seen[who].append(cursor)
                theirs.set()
        finally:
            db.close()

    other = threading.Thread(target=take_turns, args=("other", turn[1], turn[0]))
    other.start()
    turn[0].set()
    take_turns("main", turn[0], turn[1])
    other.join(10)
    store.close()
    assert len(seen["main"]) == len(seen["other"]) == 3
    assert len({id(c) for c in seen["main"]}) == len({id(c) for c in seen["other"]}) == 1
    assert seen["main"][0] is not seen["other"][0]
    assert seen["main"][0].connection is not seen["other"][0].connection
