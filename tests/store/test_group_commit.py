"""Group commit: node verbs arriving together share one transaction, each in a savepoint."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import pytest
from store_consistency import consistency_problems

from drc.core.errors import Code, DrcError
from drc.core.ports import Unit
from drc.core.service import CredentialService
from drc.link import LinkPeer
from drc.server import group as group_module
from drc.server.exports import ServerExports
from drc.server.group import GroupCommit
from drc.server.link_exporter import link_server

from helpers import ALICE, BOB, in_job, link_handled

T = TypeVar("T")


@pytest.fixture
def batches(service: CredentialService, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per ``store.batch()`` the test's verbs open (a group that had company)."""
    opened: list[int] = []
    original = service.store.batch

    def counting_batch():
        opened.append(1)
        return original()

    monkeypatch.setattr(service.store, "batch", counting_batch)
    return opened


def test_verbs_of_one_turn_commit_together_and_a_refused_one_undoes_only_itself(
    service: CredentialService,
):
    cred = service.acquire(in_job(ALICE, 1, "n0"), 0).id
    group = GroupCommit(service.store)
    commits = []

    async def storm():
        def access(uid: int, job: int, node: str) -> Callable[[object], list[int]]:
            return lambda batch: [
                service.access_credential(in_job(uid, job, node), cred, Unit(batch=batch)).refs
            ]

        calls = [
            access(ALICE, 1, "n1"),
            access(BOB, 2, "n2"),  # EPERM
            lambda batch: [service.acquire(in_job(BOB, 2, "n2"), 0, Unit(batch=batch)).id],
            access(ALICE, 1, "n3"),
        ]
        return await asyncio.gather(*(group.submit(c) for c in calls), return_exceptions=True)

    original = service.store.batch

    def counting_batch():
        commits.append(1)
        return original()

    service.store.batch = counting_batch  # type: ignore[method-assign]
    first, refused, acquired, last = asyncio.run(storm())
    assert len(commits) == 1  # one transaction for the four verbs
    assert isinstance(refused, DrcError) and refused.code is Code.EPERM
    assert isinstance(acquired, list) and isinstance(first, list) and isinstance(last, list)
    shown = service.get(in_job(ALICE, 1, "n0"), cred)
    assert shown.refs == 3  # n0 (owner), n1, n3; bob's refused access left nothing
    assert consistency_problems(service.store) == []


def alone(group: GroupCommit, call: Callable[[object], T]) -> T:
    """``call(batch)`` submitted to the group by a lone caller: its result after the commit."""

    async def one() -> T:
        return await group.submit(call)

    return asyncio.run(one())


def test_a_lone_verb_runs_and_raises_as_without_grouping(service: CredentialService):
    group = GroupCommit(service.store)
    with pytest.raises(DrcError) as err:
        alone(group, lambda _: [service.access_credential(in_job(BOB, 2, "n2"), 404)])
    assert err.value.code is Code.CRED_NOT_FOUND
    cred = alone(group, lambda _: [service.acquire(in_job(BOB, 2, "n2"), 0).id])[0]
    assert service.get(in_job(BOB, 2, "n2"), cred).refs == 1


def test_transactions_outside_a_batch_still_commit_on_their_own(service: CredentialService):
    with service.store.batch() as batch:
        cred = service.acquire(in_job(ALICE, 1, "n0"), 0, Unit(batch=batch)).id
    assert service.store._batch is None
    assert service.get(in_job(ALICE, 1, "n0"), cred).refs == 1
    service.release(in_job(ALICE, 1, "n0"), cred)
    assert consistency_problems(service.store) == []


def test_a_lone_verb_commits_alone_without_batch_or_savepoint(
    service: CredentialService, batches: list[int]
):
    """Half the batches of a few sequential clients hold one verb: it pays for no batch."""
    group = GroupCommit(service.store)
    cred = alone(
        group, lambda batch: service.acquire(in_job(BOB, 2, "n2"), 0, Unit(None, batch)).id
    )
    assert batches == []
    assert service.get(in_job(BOB, 2, "n2"), cred).refs == 1
    assert consistency_problems(service.store) == []


def test_node_verbs_on_the_link_share_the_commit_of_dbus_verbs(
    service: CredentialService, batches: list[int]
):
    """drcs hands its D-Bus group to the link server: one group, so one commit for both."""
    exports = ServerExports(service)
    exports.group = GroupCommit(service.store)
    server = link_server(
        exports.nodes, "127.0.0.1:0", munge_socket=None, node_uids={0}, group=exports.group
    )
    node = LinkPeer(uid=0, gid=0, address="test")
    caller = {"uid": ALICE, "gid": ALICE, "job": 1, "node": "n1"}

    async def together():
        # the link hands back the group's future: submitted as the request is read
        linked = link_handled(server, node, "NodeAcquire", [caller, 0])
        dbus = exports.group.submit(
            lambda batch: service.acquire(in_job(BOB, 2, "n2"), 0, Unit(None, batch)).id
        )
        return await asyncio.gather(linked, dbus)

    (linked,), dbus = asyncio.run(together())
    assert batches == [1]
    assert service.get(in_job(ALICE, 1, "n1"), linked["credential"]).refs == 1
    assert service.get(in_job(BOB, 2, "n2"), dbus).refs == 1
    assert consistency_problems(service.store) == []


def test_after_a_shared_batch_a_caller_one_turn_behind_joins_the_next(
    service: CredentialService, batches: list[int]
):
    """Sequential callers come back a few loop turns apart: once a batch had company, the next
    one waits those turns, so the straggler shares its commit instead of paying its own."""
    group = GroupCommit(service.store)

    def acquire(uid: int, job: int) -> Callable[[object], int]:
        return lambda batch: service.acquire(in_job(uid, job, "n1"), 0, Unit(None, batch)).id

    async def callers():
        await asyncio.gather(group.submit(acquire(ALICE, 1)), group.submit(acquire(BOB, 2)))
        first = asyncio.ensure_future(group.submit(acquire(ALICE, 3)))
        await asyncio.sleep(0)  # the second caller arrives a loop turn later
        second = asyncio.ensure_future(group.submit(acquire(BOB, 4)))
        return await asyncio.gather(first, second)

    ids = asyncio.run(callers())
    assert batches == [1, 1]  # the pair, then the two stragglers together
    assert len(set(ids)) == 2
    assert consistency_problems(service.store) == []


def test_on_its_store_thread_a_stuck_batch_is_answered_in_time_and_never_commits_later(
    service: CredentialService,
):
    """The store thread: a batch stuck inside its transaction (here: a verb that waits, as a
    statement waits for a database that stopped) is answered "outcome unknown" at its
    deadline, calls queued behind it and calls arriving meanwhile fail at once naming the
    store, the loop goes on, and when the batch wakes it rolls back instead of committing."""
    kept = service.acquire(in_job(ALICE, 9, "n1"), 0).id
    group = GroupCommit(service.store, threaded=True, timeout=0.3)
    wake = threading.Event()
    events: list[tuple] = []
    service.listeners.append(lambda *event: events.append((threading.get_ident(), *event)))
    group.hold_events(service.listeners)

    def acquire(uid: int, job: int) -> Callable[[object], int]:
        return lambda batch: service.acquire(in_job(uid, job, "n1"), 0, Unit(None, batch)).id

    def stuck(batch: object) -> int:
        cred = service.acquire(in_job(BOB, 2, "n1"), 0, Unit(None, batch)).id
        wake.wait(10)
        return cred

    async def stall() -> tuple[list, float, float, int]:
        started = asyncio.get_running_loop().time()
        release = lambda batch: service.release(  # noqa: E731
            in_job(ALICE, 9, "n1"), kept, Unit(None, batch)
        )
        batch = [group.submit(release), group.submit(stuck)]  # one transaction
        await asyncio.sleep(0.05)
        queued = group.submit(acquire(ALICE, 3))
        outcomes = await asyncio.gather(*batch, queued, return_exceptions=True)
        answered = asyncio.get_running_loop().time() - started
        late = asyncio.get_running_loop().time()
        refused = await asyncio.gather(group.submit(acquire(ALICE, 4)), return_exceptions=True)
        refused_in = asyncio.get_running_loop().time() - late
        assert group.health.answering is False
        wake.set()  # the database wakes: the batch reaches its commit and is rolled back
        for _ in range(100):  # the stuck batch ends, then a new call goes through
            await asyncio.sleep(0.02)
            if group._running is None:
                break
        made = await group.submit(acquire(ALICE, 5))
        with service.store.snapshot() as tx:
            assert {c.id for c in tx.list_credentials()} == {kept, made}  # nothing of the batch
        assert events == []  # its release was rolled back: no "freed" was announced
        assert await group.alone(release) is True  # now it frees, and says so
        return [*outcomes, *refused], answered, refused_in, made

    outcomes, answered, refused_in, made = asyncio.run(stall())
    assert 0.3 <= answered < 0.6 and refused_in < 0.05
    for outcome in outcomes:
        assert isinstance(outcome, DrcError) and outcome.code is Code.ECONNREFUSED, outcome
    assert "outcome of this request is unknown" in outcomes[0].message
    assert "has not answered for" in outcomes[2].message and "has not answered" in str(outcomes[3])
    assert group.health.answering is True
    with service.store.snapshot() as tx:
        assert [c.id for c in tx.list_credentials()] == [made]
    assert consistency_problems(service.store) == []
    # the change event came after its commit, on the loop's thread, not the store thread's
    assert events == [(threading.get_ident(), "freed", kept, 0)]
    group.close()


class _Turns:
    """Counts the event loop's turns (a callback that schedules itself once per turn)."""

    def __init__(self) -> None:
        self.count = 0

    def start(self) -> None:
        self.count += 1
        asyncio.get_running_loop().call_soon(self.start)


@pytest.mark.parametrize("threaded", [False, True])
def test_a_callers_then_hears_its_answer_in_the_callback_that_sets_it(
    service: CredentialService, threaded: bool
):
    """``then`` is called as the future is set, a loop turn before its done callbacks run
    (the turn a done callback would cost every answer); a caller that cancelled is not told."""
    group = GroupCommit(service.store, threaded=threaded)
    turns = _Turns()
    told: list[tuple[str, int, object]] = []

    def then(future: asyncio.Future[object]) -> None:
        told.append(("then", turns.count, future.result()))

    def acquire(uid: int, job: int) -> Callable[[object], int]:
        return lambda batch: service.acquire(in_job(uid, job, "n1"), 0, Unit(None, batch)).id

    async def callers() -> None:
        turns.start()
        gone = group.submit(acquire(BOB, 2), then)
        gone.cancel()
        answered = group.submit(acquire(ALICE, 1), then)
        answered.add_done_callback(lambda f: told.append(("done", turns.count, f.result())))
        cred = await answered
        assert told == [("then", told[0][1], cred), ("done", told[0][1] + 1, cred)]
        assert group._then == {}  # nothing kept for the cancelled caller

    asyncio.run(callers())
    group.close()


def test_a_batch_ending_within_the_grace_is_answered_without_a_loop_turn(
    service: CredentialService, monkeypatch: pytest.MonkeyPatch
):
    """The store thread runs the batch; the loop, waiting for it, answers it in the callback
    that handed it over: no loop turn, no post from the store thread."""
    monkeypatch.setattr(group_module, "STORE_GRACE", 5.0)  # only the answer ends the wait
    group = GroupCommit(service.store, threaded=True)
    turns, answered = _Turns(), []
    store_threads: set[int] = set()

    def acquire(batch: object) -> int:
        store_threads.add(threading.get_ident())
        return service.acquire(in_job(ALICE, 1, "n1"), 0, Unit(None, batch)).id

    async def caller() -> int:
        loop = asyncio.get_running_loop()
        posted = []
        monkeypatch.setattr(loop, "call_soon_threadsafe", lambda *a: posted.append(a))
        turns.start()
        submitted = turns.count
        cred = await group.submit(acquire, lambda f: answered.append(turns.count))
        assert answered[0] - submitted <= 1  # the turn that ran the flush
        assert posted == []
        return cred

    cred = asyncio.run(caller())
    assert store_threads and threading.get_ident() not in store_threads
    with service.store.snapshot() as tx:
        assert [c.id for c in tx.list_credentials()] == [cred]
    group.close()


def test_a_batch_outlasting_the_grace_leaves_the_loop_reading_until_it_ends(
    service: CredentialService, monkeypatch: pytest.MonkeyPatch
):
    """Past the grace the loop goes on (here it turns while the store thread is held) and
    hears the answer later; it does not wait for the next batch, whose store took long last
    time, but waits again once a batch was quick."""
    monkeypatch.setattr(group_module, "STORE_GRACE", 0.05)
    group = GroupCommit(service.store, threaded=True)
    turns, held = _Turns(), threading.Event()

    def slow(batch: object) -> str:
        held.wait(10)
        return "slow"

    async def answered_after(call: Callable[[object], str]) -> int:
        """Loop turns between submitting ``call`` and hearing its answer."""
        submitted, heard = turns.count, []
        await group.submit(call, lambda f: heard.append(turns.count))
        return heard[0] - submitted

    async def callers() -> list[int]:
        turns.start()
        submitted = turns.count
        future = group.submit(slow)
        while turns.count < submitted + 20:  # the loop turns while the batch is held
            await asyncio.sleep(0)
        assert not future.done()
        held.set()
        assert await future == "slow"
        not_waited = await answered_after(lambda batch: "quick")
        waited = await answered_after(lambda batch: "quick")
        return [not_waited, waited]

    not_waited, waited = asyncio.run(callers())
    assert not_waited >= 2 and waited <= 1
    group.close()


def test_every_call_is_answered_once_whichever_side_of_the_grace_its_batch_ends(
    service: CredentialService, monkeypatch: pytest.MonkeyPatch
):
    """The handoff raced: batches ending before, at and after the loop stops waiting, alone
    and together; each call hears its own result, once."""
    monkeypatch.setattr(group_module, "STORE_GRACE", 0.002)
    group = GroupCommit(service.store, threaded=True)
    heard: dict[int, int] = {}

    def call(n: int) -> Callable[[object], int]:
        def run(batch: object) -> int:
            time.sleep((n % 9) * 0.0005)  # 0 to 4 ms: both sides of the grace
            return n

        return run

    def then(future: asyncio.Future[int]) -> None:
        heard[future.result()] = heard.get(future.result(), 0) + 1

    async def callers() -> list[int]:
        results: list[int] = []
        for start in range(0, 300, 3):
            together = [group.submit(call(n), then) for n in range(start, start + 3)]
            results += await asyncio.gather(*together)
            results.append(await group.submit(call(start + 1000), then))
        return results

    results = asyncio.run(callers())
    expected = [
        n for start in range(0, 300, 3) for n in (start, start + 1, start + 2, start + 1000)
    ]
    assert results == expected
    assert heard == {n: 1 for n in expected}
    assert group._then == {} and group._running is None
    group.close()


class _Lines(logging.Handler):
    """The ``drc.audit`` lines written, and what ``seen()`` said as each was."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.seen: Callable[[], object] = lambda: None
        self.saw: list[object] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.saw.append(self.seen())


@pytest.fixture
def audit_lines() -> Iterator[_Lines]:
    lines = _Lines()
    audit = logging.getLogger("drc.audit")
    audit.addHandler(lines)
    level = audit.level
    audit.setLevel(logging.INFO)
    yield lines
    audit.removeHandler(lines)
    audit.setLevel(level)


def test_a_batchs_audit_lines_are_written_after_its_commit_before_its_callers_hear(
    service: CredentialService, audit_lines: _Lines
):
    """On the store thread, once the batch committed (no transaction open) and before its
    callers are answered: a line never claims a change that may still roll back."""
    cred = service.acquire(in_job(ALICE, 1, "n0"), 0).id
    group = GroupCommit(service.store, threaded=True)
    audit_lines.lines.clear()
    answers: list[asyncio.Future[int]] = []
    audit_lines.seen = lambda: (service.store.db.in_transaction(), [a.done() for a in answers])

    def access(node: str) -> Callable[[object], int]:
        return lambda batch: (
            service.access_credential(in_job(ALICE, 1, node), cred, Unit(None, batch)).id
        )

    async def together() -> list[int]:
        answers.extend(group.submit(access(node)) for node in ("n1", "n2"))
        return await asyncio.gather(*answers)

    assert asyncio.run(together()) == [cred, cred]
    assert audit_lines.lines == [
        f"access credential={cred} uid={ALICE} job=1 holder=job 1 on {node}"
        for node in ("n1", "n2")
    ]
    for line, (in_transaction, answered) in enumerate(audit_lines.saw[-2:]):
        assert not in_transaction and not answered[line]
    group.close()


def test_a_batch_that_fails_to_commit_writes_no_audit_line_of_its_changes(
    service: CredentialService, audit_lines: _Lines, monkeypatch: pytest.MonkeyPatch
):
    """Lines of changes that never committed are not written; a refusal's still is."""
    cred = service.acquire(in_job(ALICE, 1, "n0"), 0).id
    group = GroupCommit(service.store)
    audit_lines.lines.clear()

    def refused(batch: object) -> None:
        logging.getLogger("drc.audit").warning("limit-reached (a refusal)")
        raise DrcError(Code.ENOSPC, "refused")

    def access(node: str) -> Callable[[object], int]:
        return lambda batch: (
            service.access_credential(in_job(ALICE, 1, node), cred, Unit(None, batch)).id
        )

    original = service.store.batch

    @contextmanager
    def failing_commit() -> Iterator[object]:
        with original() as batch:
            yield batch
            raise DrcError(Code.ECONNREFUSED, "the commit failed")

    monkeypatch.setattr(service.store, "batch", failing_commit)

    async def together() -> list[object]:
        calls = [access("n1"), refused, access("n2")]
        return await asyncio.gather(*(group.submit(c) for c in calls), return_exceptions=True)

    assert all(isinstance(outcome, DrcError) for outcome in asyncio.run(together()))
    assert audit_lines.lines == ["limit-reached (a refusal)"]
    monkeypatch.setattr(service.store, "batch", original)
    assert asyncio.run(together())[0] == cred  # committed: both accesses' lines, in order
    assert audit_lines.lines[1:] == [
        f"access credential={cred} uid={ALICE} job=1 holder=job 1 on n1",
        "limit-reached (a refusal)",
        f"access credential={cred} uid={ALICE} job=1 holder=job 1 on n2",
    ]
