"""Several DRCS on one PostgreSQL: each write transaction takes only the locks its verb needs,
and limits, references and the pool stay exact.

The racing tests run two DRCS-like processes, each with its own store and the real group
commit (verbs that arrive together share one transaction, each in a savepoint), so groups of
two servers race as they do in production; then they check the invariants, and that
PostgreSQL saw no deadlock. Small under ``make test``; ``DRC_STRESS=full`` runs them longer.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from peewee import OperationalError
from store_consistency import consistency_problems

from drc.core.errors import Code, DrcError
from drc.core.model import Caller, Flags, LimitScope, Target, TargetKind
from drc.core.policy import Policy
from drc.core.ports import Contended, Unit
from drc.core.service import CredentialService
from drc.providers.pool import PoolProvider
from drc.server.group import GroupCommit
from drc.store.database import open_database
from drc.store.sql import PeeweeStore

from helpers import ALICE, BOB, ROOT, in_job, statements_run
from scale import record, size

#: make test: a few hundred verbs per race; make stress: ten times more.
ROUNDS = size(6, 60)
WAVE = 8  # verbs submitted together by one process: what its group commit batches


def service_on(url: str) -> CredentialService:
    store = PeeweeStore.from_url(url)
    return CredentialService(store, PoolProvider(cookie_min=1, cookie_max=100_000), Policy())


@pytest.fixture
def two(postgresql_url: str) -> Iterator[tuple[CredentialService, CredentialService]]:
    """Two services on one database, each with its own connection (as two DRCS)."""
    one, other = service_on(postgresql_url), service_on(postgresql_url)
    yield one, other
    one.store.close()
    other.store.close()


def try_lock(url: str, credential: int, mode: str) -> bool:
    """Whether another session gets the credential's row ``mode`` (SHARE, UPDATE) at once."""
    db = open_database(url)
    try:
        db.execute_sql(f'SELECT 1 FROM "credential" WHERE "id" = {credential} FOR {mode} NOWAIT')
        return True
    except OperationalError:
        return False
    finally:
        db.rollback()
        db.close()


def test_an_access_holds_its_credential_shared_and_a_release_exclusive(two, postgresql_url):
    one, _ = two
    cred = one.acquire(in_job(ALICE, 10), 0).id
    with one.store.batch() as b_one:  # keeps the verb's transaction open
        one.access(in_job(ALICE, 11, node="n2"), cred, unit=Unit(batch=b_one))
        assert try_lock(postgresql_url, cred, "SHARE")  # other accesses go on
        assert not try_lock(postgresql_url, cred, "UPDATE")  # a release waits
    with one.store.batch() as b_one:
        one.release(in_job(ALICE, 11, node="n2"), cred, unit=Unit(batch=b_one))
        assert not try_lock(postgresql_url, cred, "SHARE")  # an access waits
    assert try_lock(postgresql_url, cred, "UPDATE")  # nothing held after commit


def test_acquires_and_access_misses_on_two_servers_do_not_wait_for_each_other(two):
    """What the counter-row lock serialized: now neither waits while the other's transaction
    is open (a wait would last the 1 s lock timeout and fail). Both take a returned slot of
    the pool (only growing the pool past its high-water mark holds the pool's counter row)."""
    one, other = two
    shared = one.acquire(in_job(ALICE, 10), 0).id
    for cred in [one.acquire(in_job(BOB, 9), 0) for _ in range(4)]:
        one.release(in_job(BOB, 9), cred.id)
    with one.store.batch() as b_one:
        one.acquire(in_job(ALICE, 20), 0, unit=Unit(batch=b_one))
        one.access(in_job(ALICE, 21, node="n2"), shared, unit=Unit(batch=b_one))
        started = time.monotonic()
        made = other.acquire(in_job(BOB, 30), 0)
        other.access(in_job(ALICE, 22, node="n3"), shared)
        assert time.monotonic() - started < 0.5
    assert made.resources.cookie1 not in {c.resources.cookie1 for c in one.list(ROOT) if c != made}
    assert consistency_problems(one.store) == []


def test_a_verb_of_a_group_meeting_another_servers_lock_is_undone_as_contended(two):
    one, other = two
    owner = in_job(ALICE, 10)
    cred = one.acquire(owner, 0).id
    with one.store.batch() as b_one:
        one.release(owner, cred, unit=Unit(batch=b_one))  # frees it: exclusive until commit
        started = time.monotonic()
        with other.store.batch() as b_other:
            with pytest.raises(Contended):
                other.access(in_job(ALICE, 11, node="n2"), cred, unit=Unit(batch=b_other))
            kept = other.acquire(in_job(BOB, 20), 0, unit=Unit(batch=b_other))  # the group goes on
        assert time.monotonic() - started < 0.5
    assert other.list(ROOT) == [kept]  # the access left nothing; it would now be refused
    with pytest.raises(DrcError) as gone:
        other.access(in_job(ALICE, 11, node="n2"), cred)
    assert gone.value.code is Code.CRED_NOT_FOUND


def test_a_limit_set_while_an_acquire_is_open_waits_for_it(two, postgresql_url):
    """An acquire that read the limits holds them until commit: an admin's change comes
    after it, never between its reading the limits and its commit."""
    one, _ = two
    with one.store.batch() as b_one:
        one.acquire(in_job(ALICE, 10), 0, unit=Unit(batch=b_one))
        db = open_database(postgresql_url)
        try:
            store = PeeweeStore(db)
            service = CredentialService(store, PoolProvider(cookie_min=1, cookie_max=9))
            with pytest.raises(DrcError) as waited:  # the lock timeout (1 s) ends its wait
                service.set_limit(ROOT, LimitScope.UID, ALICE, 1)
            assert waited.value.code is Code.ECONNREFUSED
        finally:
            db.close()


# -- racing servers ----------------------------------------------------------------------


def _serve(url: str, work: Callable[[CredentialService], list[Callable[[Any], Any]]]) -> list:
    """Run ``work``'s calls through a real group commit, WAVE at a time: the outcome of each
    (its result, or the DrcError's code name; anything else is re-raised)."""
    service = service_on(url)
    group = GroupCommit(service.store, threaded=True, timeout=30)
    calls = work(service)

    async def run() -> list:
        out: list = []
        for i in range(0, len(calls), WAVE):
            futures = [group.submit(call) for call in calls[i : i + WAVE]]
            for answer in await asyncio.gather(*futures, return_exceptions=True):
                if isinstance(answer, DrcError):
                    answer = answer.code.name
                elif isinstance(answer, BaseException):
                    raise answer
                out.append(answer)
        return out

    try:
        return asyncio.run(run())
    finally:
        group.close()
        service.store.close()


def _racer(url: str, index: int, work: Callable, start: Any, results: Any) -> None:
    start.wait(30)
    try:
        results.put((index, "ok", _serve(url, work)))
    except BaseException as err:  # reported to the test, not lost in the child
        results.put((index, "error", repr(err)))


def race(url: str, works: list[Callable]) -> list[list]:
    """Each of ``works`` in a process of its own, started together; their outcomes, in the
    order of ``works``."""
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Barrier(len(works)), ctx.Queue()
    procs = [
        ctx.Process(target=_racer, args=(url, i, w, start, results)) for i, w in enumerate(works)
    ]
    for p in procs:
        p.start()
    answers = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    errors = [a for _, kind, a in answers if kind == "error"]
    assert not errors, errors
    return [a for _, _, a in answers]


def report(race: str, verbs: int, broken: list[str], store: PeeweeStore) -> None:
    """One row of the stress table for a race; ``broken``: the invariants it broke."""
    found = deadlocks(store)
    broken = [*broken, *consistency_problems(store)] + ([f"{found} deadlocks"] if found else [])
    record(
        f"two DRCS racing on PostgreSQL: {race}",
        "0 broken invariants, 0 deadlocks",
        f"{verbs} verbs through two group commits: " + ("; ".join(broken) or "none broken"),
        not broken,
    )
    assert not broken, broken


def deadlocks(store: PeeweeStore) -> int:
    """Deadlocks PostgreSQL detected in this database (the racers have exited: counted)."""
    store.db.execute_sql("SELECT pg_stat_clear_snapshot()")
    ((n,),) = store.db.execute_sql(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
    ).fetchall()
    return int(n)


def test_two_servers_racing_acquires_under_a_limit_never_exceed_it(postgresql_url):
    setup = service_on(postgresql_url)
    limit = 3 * WAVE + 1
    setup.set_limit(ROOT, LimitScope.UID, ALICE, limit)
    attempts = ROUNDS * WAVE

    def acquires(job: int) -> Callable:
        def work(s: CredentialService) -> list[Callable[[Any], Any]]:
            return [
                lambda b: s.acquire(in_job(ALICE, job), 0, Unit(batch=b)).id
                for _ in range(attempts)
            ]

        return work

    outcomes = race(postgresql_url, [acquires(100), acquires(200)])
    granted = [o for out in outcomes for o in out if isinstance(o, int)]
    refused = [o for out in outcomes for o in out if not isinstance(o, int)]
    live = setup.list(ROOT)
    broken = [f"{o} refusal" for o in set(refused) - {"ENOSPC"}]
    if not len(granted) == len(live) == limit:
        broken.append(f"limit {limit}: {len(granted)} granted, {len(live)} live")
    if len({c.resources.cookie1 for c in live}) != len(live):
        broken.append("a cookie held twice")
    report(f"acquires under a limit (limit {limit})", 2 * attempts, broken, setup.store)
    setup.store.close()


def test_two_servers_racing_access_against_the_last_release_leave_no_reference_behind(
    postgresql_url,
):
    """One server releases each credential (the owner's last reference: it frees it) while
    the other accesses it. Either the access came first (the credential stays, RELEASED, held
    by the accessor) or the release did (the access is refused); never an access answered
    whose reference went with a freed credential."""
    setup = service_on(postgresql_url)
    owner = in_job(ALICE, 10, node="n1")
    creds = [setup.acquire(owner, 0).id for _ in range(ROUNDS * WAVE)]
    accessor = in_job(ALICE, 20, node="n2")

    def releases(s: CredentialService) -> list[Callable[[Any], Any]]:
        return [lambda b, c=c: s.release(owner, c, Unit(batch=b)) for c in creds]

    # The first half in the releaser's order (neck and neck: the most collisions), the
    # second from the other end (they meet in the middle, so each side wins some).
    half = len(creds) // 2
    order = creds[:half] + creds[half:][::-1]

    def accesses(s: CredentialService) -> list[Callable[[Any], Any]]:
        return [lambda b, c=c: s.access(accessor, c, Unit(batch=b)).credential for c in order]

    freed, in_order = race(postgresql_url, [releases, accesses])
    by_credential = dict(zip(order, in_order, strict=True))
    accessed = [by_credential[c] for c in creds]
    assert len(freed) == len(accessed) == len(creds)
    alive = {c.id: c for c in setup.list(ROOT)}
    with setup.store.snapshot() as tx:
        holders = tx.holders(creds)
    broken = []
    for cred, was_freed, access in zip(creds, freed, accessed, strict=True):
        if access == cred:  # the access was answered: its reference must be there
            if was_freed or cred not in alive or accessor.holder not in holders[cred]:
                broken.append(f"credential {cred}: access answered, then freed")
        elif access != "CRED_NOT_FOUND" or not was_freed or cred in alive:
            broken.append(f"credential {cred}: access {access}, release freed {was_freed}")
    won = sum(access == cred for cred, access in zip(creds, accessed, strict=True))
    report(
        f"access against the last release ({won} of {len(creds)} accesses first)",
        2 * len(creds),
        broken,
        setup.store,
    )
    setup.store.close()


def test_two_servers_racing_acquire_and_release_never_share_a_cookie(postgresql_url):
    """Pool slots claimed and returned by two servers at once, some credentials kept: each
    live credential has its own cookie and slot, and the pool's count matches."""
    rounds = ROUNDS
    setup = service_on(postgresql_url)  # migrated before the racers open it

    def churn(job: int) -> Callable:
        def work(s: CredentialService) -> list[Callable[[Any], Any]]:
            calls: list[Callable[[Any], Any]] = []
            for r in range(rounds):
                caller = in_job(ALICE, job + r)

                def pair(batch: Any, caller: Caller = caller, keep: bool = r % 3 == 0) -> Any:
                    cred = s.acquire(caller, int(Flags.FLEX_CREDENTIAL), Unit(batch=batch))
                    if not keep:
                        s.release(caller, cred.id, Unit(batch=batch))
                    return cred.resources.cookie1

                calls += [pair] * WAVE
            return calls

        return work

    outcomes = race(postgresql_url, [churn(1000), churn(5000)])
    broken = [f"{o} refusal" for out in outcomes for o in out if not isinstance(o, int)]
    live = setup.list(ROOT)
    if len(live) != 2 * WAVE * len(range(0, rounds, 3)):
        broken.append(f"{len(live)} live credentials kept")
    if len({c.resources.cookie1 for c in live}) != len(live):
        broken.append("a cookie held twice")
    report("cookie allocation (acquire and release)", 2 * rounds * WAVE, broken, setup.store)
    setup.store.close()


def test_a_contended_verb_of_a_group_runs_again_alone_and_is_answered(postgresql_url):
    """The group commit's side: a verb undone as contended runs again after the group
    committed, waiting for the lock then, and its caller gets that answer, not an error."""
    one, other = service_on(postgresql_url), service_on(postgresql_url)
    owner = in_job(ALICE, 10)
    cred = one.acquire(owner, 0).id
    group = GroupCommit(other.store, threaded=True, timeout=10)
    held = threading.Event()

    def hold_exclusive() -> None:  # another server's open grant: the access must wait
        with one.store.batch() as b_one:
            one.grant(owner, cred, Target(TargetKind.UID, BOB), unit=Unit(batch=b_one))
            held.set()
            time.sleep(0.3)

    async def scenario() -> list:
        futures = [
            group.submit(
                lambda b: other.access(in_job(ALICE, 11, node="n2"), cred, Unit(batch=b)).credential
            ),
            group.submit(lambda b: other.acquire(in_job(BOB, 20), 0, Unit(batch=b)).id),
        ]
        return await asyncio.gather(*futures, return_exceptions=True)

    holder = threading.Thread(target=hold_exclusive)
    holder.start()
    try:
        assert held.wait(10)
        answers = asyncio.run(scenario())
    finally:
        holder.join(10)
        group.close()
    assert answers[0] == cred and isinstance(answers[1], int), answers
    with other.store.snapshot() as tx:
        assert in_job(ALICE, 11, node="n2").holder in tx.holders([cred])[cred]
    one.store.close()
    other.store.close()


def test_a_group_that_notifies_waits_for_the_notify_lock_at_commit_as_for_any_lock(two):
    """A group waits 1 ms for its verbs' locks. Its COMMIT, when a verb freed or revoked (a
    NOTIFY), takes PostgreSQL's one lock on the notification queue, which another DRCS's
    NOTIFYing commit may hold for a moment: with 1 ms, the whole group failed ("canceling
    statement due to lock timeout" at COMMIT, seen in 2-7 of 4,800 acquire+release pairs on
    two DRCS). So the lock timeout is the session's again before such a COMMIT, and only
    then: a group of accesses sends nothing more."""
    one, _ = two
    freed = one.acquire(in_job(ALICE, 7, "n1"), 0).id
    kept = one.acquire(in_job(ALICE, 8, "n1"), 0).id
    with statements_run(one.store.db) as frees, one.store.batch() as batch:
        one.release(in_job(ALICE, 7, "n1"), freed, Unit(None, batch))
    with statements_run(one.store.db) as accesses, one.store.batch() as batch:
        one.access_credential(in_job(ALICE, 8, "n2"), kept, Unit(None, batch))
    assert any("notify" in text.lower() for text in frees)
    assert "reset_val" in frees[-1]  # the session's lock timeout, the last before COMMIT
    assert all("reset_val" not in text for text in accesses)
    with one.store.snapshot() as tx:
        assert [c.id for c in tx.list_credentials()] == [kept]
