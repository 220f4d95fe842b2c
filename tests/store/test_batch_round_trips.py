"""A group commit's verbs on both backends: what each verb sends to the database, and that
the request claims and savepoints sent together keep their meaning.

On PostgreSQL a batch verb's savepoint, the previous verb's release and its request claim go
in one round trip (:meth:`drc.store.sql.PeeweeStore._verb_savepoint`): a replayed request
in a batch is still recognised, a refused verb still undoes its claim, and the batch goes on
after either.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from drc.core.errors import DrcError
from drc.core.model import Flags, Target, TargetKind
from drc.core.ports import Contended, Request, Unit
from drc.core.service import CredentialService
from drc.providers.pool import PoolProvider
from drc.store import requests
from drc.store.sql import PeeweeStore

from helpers import ALICE, BOB, CAROL, in_job, statements_run


@pytest.fixture(params=["sqlite", "postgresql"])
def batch_service(request: pytest.FixtureRequest, tmp_path) -> Iterator[CredentialService]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/drcs.db"
    else:
        url = request.getfixturevalue("postgresql_url")
    store = PeeweeStore.from_url(url)
    yield CredentialService(store, PoolProvider(cookie_min=1000, cookie_max=1099, ptag=7))
    store.close()


def _serving(batch: object, rid: str, method: str, args: list) -> Unit:
    return Unit(Request(rid, method, requests.digest(method, args)), batch)


def _records(service: CredentialService) -> list[str]:
    with service.store.snapshot() as tx:
        rows = tx.db.execute_sql('SELECT "rid" FROM "link_request" ORDER BY "rid"').fetchall()
    return [rid for (rid,) in rows]


def test_claims_in_a_batch_replay_refuse_and_commit_as_alone(batch_service: CredentialService):
    service = batch_service
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id
    service.grant(owner, cred, Target(TargetKind.UID, BOB))
    args = [{"job": 20}, cred]
    with service.store.batch() as batch:
        first = _serving(batch, "n1-1", "NodeAccess", args)
        service.access_credential(in_job(BOB, 20, node="n1"), cred, first)
        assert first.request.recorded
        again = _serving(batch, "n1-1", "NodeAccess", args)  # a retry inside the same batch
        with pytest.raises(requests.Replayed) as replayed:
            service.access_credential(in_job(BOB, 20, node="n1"), cred, again)
        assert replayed.value.same and not again.request.recorded
        refused = _serving(batch, "n2-1", "NodeAccess", [{"job": 20}, cred + 1])
        with pytest.raises(DrcError):  # no such credential: its savepoint and claim undone
            service.access_credential(in_job(BOB, 20, node="n2"), cred + 1, refused)
        assert not refused.request.recorded
        later = _serving(batch, "n3-1", "NodeAccess", args)  # the batch goes on
        service.access_credential(in_job(BOB, 20, node="n3"), cred, later)
    assert _records(service) == ["n1-1", "n3-1"]
    with service.store.snapshot() as tx:
        assert tx.get_credential(cred).refs == 3  # the owner's job, n1 and n3
    with pytest.raises(requests.Replayed):  # committed: a retry after the batch too
        service.access_credential(
            in_job(BOB, 20, node="n1"), cred, _serving(None, "n1-1", "NodeAccess", args)
        )


def test_a_batched_access_makes_two_round_trips_on_postgresql(
    batch_service: CredentialService,
):
    """The savepoint with the previous verb's release (or the batch's lock timeout), the
    claim, the credential's lock and the credential read; the reference's insert (which says
    whether it is new). SQLite: no lock, and savepoint, claim and release one statement
    each (no round trips there)."""
    service = batch_service
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id
    service.grant(owner, cred, Target(TargetKind.UID, BOB))
    with service.store.batch() as batch:
        sent = []
        for node in ("n1", "n2"):
            unit = _serving(batch, f"{node}-1", "NodeAccess", [{"job": 20}, cred])
            with statements_run(service.store.db) as statements:
                service.access_credential(in_job(BOB, 20, node=node), cred, unit)
            sent.append(statements)
    if service.store.postgresql:
        assert [len(s) for s in sent] == [2, 2], sent
        first, second = sent[0][0], sent[1][0]
        # the batch's lock timeout goes with its first verb, before any lock
        assert first.startswith("SELECT set_config('lock_timeout'"), first
        assert "SAVEPOINT v" in first and "link_request" in first, first
        # the lock, then the credential's read, which carries them all (its id quoted in)
        read = first.index('FROM "credential" AS c')
        assert first.index("FOR KEY SHARE") < read, first
        assert f'WHERE c."id" IN ({cred})' in first[read:], first
        assert second.startswith("RELEASE SAVEPOINT v") and "lock_timeout" not in second
    else:
        # savepoint, claim, read, insert, release
        assert [len(s) for s in sent] == [5, 5], sent
    assert _records(service) == ["n1-1", "n2-1"]


def test_a_claim_another_transaction_holds_is_contended_and_the_batch_goes_on(
    postgresql_url: str,
):
    """The same request id being claimed by another DRCS's open transaction (a node's retry
    elsewhere): the claim, sent with the savepoint, may not wait in a batch; the verb is
    undone as :class:`Contended` (run alone after the group), the batch goes on."""
    import psycopg

    store = PeeweeStore.from_url(postgresql_url)
    service = CredentialService(store, PoolProvider(cookie_min=1000, cookie_max=1099, ptag=7))
    try:
        owner = in_job(ALICE, 10)
        cred = service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id
        args = [{"job": 10}, cred]
        with psycopg.connect(postgresql_url) as other:  # not committed until the end
            claim = _serving(None, "n1-1", "NodeAccess", args).request
            assert claim is not None
            requests.claim(_PsycopgDb(other), claim)
            with store.batch() as batch:
                held = _serving(batch, "n1-1", "NodeAccess", args)
                started = time.monotonic()
                with pytest.raises(Contended):
                    service.access_credential(in_job(ALICE, 10, node="n1"), cred, held)
                # the batch's 1 ms lock timeout was in force (a lone one waits 1 s)
                assert time.monotonic() - started < 0.5
                assert not held.request.recorded
                service.access_credential(
                    in_job(ALICE, 10, node="n2"), cred, _serving(batch, "n2-1", "NodeAccess", args)
                )
            other.rollback()
        assert _records(service) == ["n2-1"]
    finally:
        store.close()


class _PsycopgDb:
    """Just enough of a Peewee database over a bare psycopg connection for
    :func:`requests.claim`: another DRCS's transaction."""

    param = "%s"

    def __init__(self, conn) -> None:
        self.conn = conn

    def execute_sql(self, sql: str, params=()):
        return self.conn.execute(sql, params)


def test_claims_forget_old_request_ids_by_chance_but_never_inside_a_statement_count(
    batch_service: CredentialService, monkeypatch: pytest.MonkeyPatch
):
    """A claim forgets the ids older than KEEP_SECONDS at random (FORGET_CHANCE); a count of
    statements holds that off, or every count above would fail now and then (one in 100)."""
    service = batch_service
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id
    service.grant(owner, cred, Target(TargetKind.UID, BOB))
    monkeypatch.setattr(requests, "FORGET_CHANCE", 1.0)  # every claim forgets
    with service.store.batch() as batch:
        unit = _serving(batch, "n1-1", "NodeAccess", [{"job": 20}, cred])
        with statements_run(service.store.db) as counted:
            service.access_credential(in_job(BOB, 20, node="n1"), cred, unit)
        unit = _serving(batch, "n2-1", "NodeAccess", [{"job": 20}, cred])
        with statements_run(service.store.db) as sent, monkeypatch.context() as inner:
            # counted again, with the count's hold undone: what a claim sends uncounted
            inner.setattr(requests, "FORGET_CHANCE", 1.0)
            service.access_credential(in_job(BOB, 20, node="n2"), cred, unit)
    assert requests.FORGET_CHANCE == 1.0  # the count's hold ended with it
    assert not [s for s in counted if 'DELETE FROM "link_request"' in s]
    assert [s for s in sent if 'DELETE FROM "link_request"' in s]
    assert _records(service) == ["n1-1", "n2-1"]


def _boot_id(service: CredentialService, node: str) -> str | None:
    with service.store.snapshot() as tx:
        rows = tx.db.execute_sql(
            'SELECT "boot_id" FROM "node" WHERE "name" = ?'.replace("?", tx.db.param), (node,)
        ).fetchall()
    return rows[0][0] if rows else None


@pytest.mark.parametrize("batched", [True, False], ids=["in-a-batch", "alone"])
def test_a_replayed_hello_changes_nothing_though_its_write_rode_with_its_claim(
    batch_service: CredentialService, batched: bool
):
    """On PostgreSQL a verb's first statement goes in the round trip of its claim: a hello's
    is the boot id's write. A node's late retry of an old hello (boot "b1") after a newer
    hello (boot "b2") is recognised by its claim, and the write that rode with it is undone
    with its savepoint (or its transaction): the node keeps boot "b2", the batch goes on."""
    service = batch_service
    old = ["n1", "b1"]
    service.node_hello("n1", "b1", _serving(None, "n1-old", "NodeHello", old))
    service.node_hello("n1", "b2", _serving(None, "n1-new", "NodeHello", ["n1", "b2"]))
    assert _boot_id(service, "n1") == "b2"
    with service.store.batch() if batched else contextlib.nullcontext() as batch:
        retry = _serving(batch, "n1-old", "NodeHello", old)
        with pytest.raises(requests.Replayed) as replayed:
            service.node_hello("n1", "b1", retry)
        assert replayed.value.same and not retry.request.recorded
        later = _serving(batch, "n2-1", "NodeHello", ["n2", "b9"])
        service.node_hello("n2", "b9", later)  # the batch goes on
    assert _boot_id(service, "n1") == "b2"
    assert _boot_id(service, "n2") == "b9"
    assert _records(service) == ["n1-new", "n1-old", "n2-1"]


def test_a_verb_that_runs_no_statement_still_claims_its_request(
    batch_service: CredentialService,
):
    """A verb's claim waits for its first statement (PostgreSQL); one that runs none is
    claimed when it ends, before the batch commits. One that fails before running any
    leaves no claim, no savepoint, and the batch's next verb releases what it still owes."""
    store = batch_service.store
    with store.batch() as batch:
        with store.transaction(_serving(batch, "quiet-1", "NodeAccess", [])):
            pass
        with (
            pytest.raises(RuntimeError),
            store.transaction(_serving(batch, "failed-1", "NodeAccess", [])),
        ):
            raise RuntimeError("refused before reading anything")
        with store.transaction(_serving(batch, "after-1", "NodeAccess", [])) as tx:
            assert tx.get_credential(1) is None  # the batch still works
    assert _records(batch_service) == ["after-1", "quiet-1"]


def test_a_verb_whose_first_statement_is_a_peewee_query_carries_its_opening(
    batch_service: CredentialService,
):
    """A node reboot's first statement is a Peewee query, which Peewee reads on a cursor of
    its own and closes: its opening (savepoint, claim) goes with it all the same, and the
    batch's next verb, on the store's own statements, still runs."""
    service = batch_service
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id
    service.access_credential(in_job(ALICE, 10, node="n7"), cred)
    with service.store.batch() as batch:
        service.node_rebooted("n7", _serving(batch, "n7-boot", "NodeRebooted", ["n7"]))
        later = _serving(batch, "n8-1", "NodeAccess", [{"job": 10}, cred])
        service.access_credential(in_job(ALICE, 10, node="n8"), cred, later)
    assert _records(service) == ["n7-boot", "n8-1"]
    with service.store.snapshot() as tx:
        assert tx.get_credential(cred).refs == 2  # the owner's job on n1 and n8's; n7's went


def _granted_to_bob_and_accessed_twice(service: CredentialService) -> int:
    """A credential of alice's granted to bob, who accessed it on n1 and n2: its statements
    have run, so they are prepared before the next transaction."""
    owner = in_job(ALICE, 10)
    cred = service.acquire(owner, int(Flags.FLEX_CREDENTIAL)).id
    service.grant(owner, cred, Target(TargetKind.UID, BOB))
    for node in ("n1", "n2"):
        service.access_credential(in_job(BOB, 20, node=node), cred)
    return cred


def test_postgresql_plans_a_verbs_statements_once_and_keeps_them_past_rollbacks(
    postgresql_url: str,
):
    """A statement is prepared on its connection before the transaction after its first run,
    outside any transaction; from then on it is executed prepared, also when it carries an
    opening. A refused verb rolls back: the prepared statements stay (the driver would have
    deallocated them all, its own preparing is off) and the next access runs prepared, every
    statement of it."""
    from drc.core.errors import Code

    store = PeeweeStore.from_url(postgresql_url)
    service = CredentialService(store, PoolProvider(cookie_min=1000, cookie_max=1099, ptag=7))
    try:
        cred = _granted_to_bob_and_accessed_twice(service)
        with statements_run(store.db) as sent:
            service.access_credential(in_job(BOB, 20, node="n3"), cred)
        lock, read = sent[0].split("; ")
        assert lock.endswith("FOR KEY SHARE") and read.startswith("EXECUTE drc_"), sent
        assert read.endswith(f"({cred})"), read
        with pytest.raises(DrcError) as refused:  # carol was granted nothing: rolled back
            service.access_credential(in_job(CAROL, 30, node="n4"), cred)
        assert refused.value.code is Code.EPERM
        with statements_run(store.db) as sent:
            service.access_credential(in_job(BOB, 20, node="n5"), cred)
        assert sent[0].split("; ")[1].startswith("EXECUTE drc_"), sent
        # the reference it writes too (a boolean among its values), as counted: the
        # statements a test counts run on production's path
        assert len(sent) == 2 and sent[1].startswith("EXECUTE drc_"), sent
        assert sent[1].endswith(", FALSE)"), sent
        with store.snapshot() as tx:
            assert tx.get_credential(cred).refs == 5  # the owner's job; bob's on n1, n2, n3, n5
            names = store.db.execute_sql(
                "SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'drc%%'"
            ).fetchone()[0]
        assert names >= 3
    finally:
        store.close()


def test_a_statement_postgresql_will_not_prepare_runs_unprepared_and_the_store_goes_on(
    postgresql_url: str, caplog: pytest.LogCaptureFixture
):
    """The store declares each parameter's type when it prepares (an int is a bigint); the
    driver, unprepared, sends the smallest that fits. Where only the driver's is right (a
    date plus a bigint is no operator), PostgreSQL refuses the PREPARE: the statement runs
    unprepared, as before, with one warning, is not offered again, and the connection is
    not left in a failed state: the verbs after it run prepared."""
    import datetime

    from drc.store.statements import prepare_waiting, run

    store = PeeweeStore.from_url(postgresql_url)
    service = CredentialService(store, PoolProvider(cookie_min=1000, cookie_max=1099, ptag=7))
    try:
        db = store.db
        db.connect(reuse_if_open=True)
        untyped = "SELECT DATE '2026-12-05' + %s"
        tomorrow = datetime.date(2026, 12, 6)
        assert run(db, untyped, [1]).fetchone() == (tomorrow,)
        with caplog.at_level("WARNING", logger="drc.store"):
            prepare_waiting(db)
            with statements_run(db) as sent:
                assert run(db, untyped, [1]).fetchone() == (tomorrow,)
                prepare_waiting(db)  # refused once: not offered again
        assert sent == [untyped]
        refusals = [r.message for r in caplog.records if "did not prepare" in r.message]
        assert len(refusals) == 1 and untyped in refusals[0], refusals
        cred = _granted_to_bob_and_accessed_twice(service)
        with statements_run(db) as sent:
            service.access_credential(in_job(BOB, 20, node="n3"), cred)
        assert all(s.split("; ")[-1].startswith("EXECUTE drc_") for s in sent), sent
    finally:
        store.close()
