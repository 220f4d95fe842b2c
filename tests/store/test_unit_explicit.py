"""The request to record and the batch reach a transaction only as arguments (its
:class:`~drc.core.ports.Unit`): a transaction that is not handed them neither records the
request nor joins the batch, whatever thread opens it."""

from __future__ import annotations

import asyncio
import threading

import pytest
from store_consistency import consistency_problems

from drc.core.errors import Code, DrcError
from drc.core.model import Resources
from drc.core.ports import ExternalFailure, ExternalObjects, Request, SlotAllocator, Unit
from drc.core.service import CredentialService
from drc.export import PeerCredentials, exported_methods, verbs
from drc.link import LinkPeer
from drc.providers.pool import PoolProvider
from drc.server.exports import ServerExports, ServerNodeVerbs
from drc.server.group import GroupCommit
from drc.server.link_exporter import link_server
from drc.store import requests
from drc.store.sql import PeeweeStore

from helpers import ALICE, BOB, in_job, link_handled


def recorded_rids(store: PeeweeStore) -> list[str]:
    with store.snapshot() as tx:
        rows = tx.db.execute_sql('SELECT "rid" FROM "link_request" ORDER BY "rid"').fetchall()
    return [rid for (rid,) in rows]


def credential_ids(store: PeeweeStore) -> set[int]:
    with store.snapshot() as tx:
        return {c.id for c in tx.list_credentials()}


def test_a_write_transaction_opened_inside_a_batch_without_its_handle_is_refused(
    service: CredentialService,
):
    """Refused, not silently made a savepoint (nor left to deadlock on the store's lock);
    the batch goes on and commits what was done with its handle."""
    store = service.store
    with store.batch() as batch:
        kept = service.acquire(in_job(ALICE, 1), 0, Unit(batch=batch)).id
        with pytest.raises(RuntimeError, match="without its handle"):
            service.acquire(in_job(BOB, 2), 0)
        with pytest.raises(RuntimeError, match="without its handle"):
            service.acquire(in_job(BOB, 2), 0, Unit(Request("r1", "NodeAcquire", "d")))
        with pytest.raises(DrcError) as refused:  # a savepoint: undoes only itself
            service.access_credential(in_job(BOB, 3), kept, Unit(batch=batch))
        assert refused.value.code is Code.EPERM
    assert store._batch is None
    assert credential_ids(store) == {kept}
    assert recorded_rids(store) == []
    with pytest.raises(RuntimeError, match="not open"):  # a handle outlives its batch
        service.acquire(in_job(BOB, 2), 0, Unit(batch=batch))
    assert consistency_problems(store) == []


def test_another_threads_transaction_waits_for_the_batch_and_does_not_join_it(
    service: CredentialService,
):
    """The batch is a handle, not a mode of the thread: a transaction of another thread is its
    own, committed after the batch ends, and survives the batch rolling back."""
    store = service.store
    started, done = threading.Event(), threading.Event()
    made: list[int] = []

    def other() -> None:
        started.set()
        made.append(service.acquire(in_job(BOB, 2), 0).id)
        done.set()

    worker = threading.Thread(target=other)
    with pytest.raises(LookupError), store.batch() as batch:
        service.acquire(in_job(ALICE, 1), 0, Unit(batch=batch))
        worker.start()
        assert started.wait(5)
        assert not done.wait(0.2)  # it waits for the store's write lock
        raise LookupError("the batch rolls back")
    worker.join(10)
    assert done.is_set() and len(made) == 1
    assert credential_ids(store) == set(made)
    assert consistency_problems(store) == []


def test_a_request_is_claimed_only_by_a_transaction_it_is_handed_and_only_once(
    service: CredentialService,
):
    store = service.store
    unit = Unit(Request("n1-u-1", "NodeAcquire", "d"))
    with store.transaction() as tx:  # same call, not handed the unit: records nothing
        tx.next_credential_id()
    assert recorded_rids(store) == [] and not unit.request.recorded
    with store.transaction(unit) as tx:
        tx.next_credential_id()
    assert recorded_rids(store) == ["n1-u-1"] and unit.request.recorded
    with store.transaction(unit) as tx:  # a second transaction of the call: no second claim
        tx.next_credential_id()
    with store.transaction(unit.without_request()) as tx:
        tx.next_credential_id()
    assert recorded_rids(store) == ["n1-u-1"]
    retry = Unit(Request("n1-u-1", "NodeAcquire", "d"))  # a new call under the same id
    with pytest.raises(requests.Replayed), store.transaction(retry):
        pass


def test_every_exactly_once_node_verb_hands_its_request_to_the_store():
    """A verb answered from the record when retried (``replay``) must record its request: its
    implementation takes the unit; the link refuses to serve one that does not."""
    table = exported_methods(ServerNodeVerbs)
    replayed = verbs(ServerNodeVerbs, where=lambda m: m.replay is not None)
    assert replayed and all(table[name].takes_unit for name in replayed)
    assert all(m.takes_unit for m in table.values() if m.mutating)
    assert not any(m.takes_unit for m in table.values() if not m.mutating)

    class Forgetful(ServerNodeVerbs):
        def __init__(self) -> None:
            pass

        def node_hello(self, peer: PeerCredentials, node: str, boot_id: str) -> bool:  # no unit
            return False

    with pytest.raises(TypeError, match="NodeHello"):
        link_server(Forgetful(), "127.0.0.1:0", munge_socket=None, node_uids={0})


def test_in_a_link_batch_each_request_is_recorded_with_its_own_verb_only(
    service: CredentialService,
):
    """Two exactly-once acquires and a refused access share one batch: each acquire records
    its own rid in its savepoint, the refused one records nothing (its retry runs again), and
    a retry of a committed one is answered from the record."""
    exports = ServerExports(service)
    exports.group = GroupCommit(service.store)
    opened: list[int] = []
    original = service.store.batch

    def counting_batch():
        opened.append(1)
        return original()

    service.store.batch = counting_batch  # type: ignore[method-assign]
    server = link_server(
        exports.nodes, "127.0.0.1:0", munge_socket=None, node_uids={0}, group=exports.group
    )
    node = LinkPeer(uid=0, gid=0, address="test")
    alice = {"uid": ALICE, "gid": ALICE, "job": 1, "node": "n1"}
    bob = {"uid": BOB, "gid": BOB, "job": 2, "node": "n2"}

    async def together() -> list:
        calls = [
            link_handled(server, node, "NodeAcquire", [alice, 0], "n1-a"),
            link_handled(server, node, "NodeAccess", [bob, 404], "n2-x"),
            link_handled(server, node, "NodeAcquire", [bob, 0], "n2-a"),
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    first, refused, second = asyncio.run(together())
    assert opened == [1]  # one batch for the three
    assert isinstance(refused, DrcError) and refused.code is Code.CRED_NOT_FOUND
    assert recorded_rids(service.store) == ["n1-a", "n2-a"]

    async def retry() -> list:
        return await link_handled(server, node, "NodeAcquire", [alice, 0], "n1-a")

    again = asyncio.run(retry())
    assert again[0]["credential"] == first[0]["credential"]  # answered, not run again
    assert credential_ids(service.store) == {first[0]["credential"], second[0]["credential"]}
    assert consistency_problems(service.store) == []


class Leaky(PoolProvider):
    """Cookies of the pool plus a (pretend) external object that cannot be removed now, and
    allocation fails after creating it: the core must record a pending cleanup."""

    features = (ExternalObjects,)
    cleanup_retry_interval = 5.0

    def allocate(self, credential: int, slots: SlotAllocator) -> Resources:
        made = super().allocate(credential, slots)
        raise ExternalFailure("the tool timed out", leftover=made)

    def release_external(self, resources: Resources) -> None:
        raise RuntimeError("still busy")

    def describe_external(self, resources: Resources) -> str:
        return f"object {resources.cookie1}"


def test_a_failed_acquire_in_a_batch_records_its_cleanup_in_the_batch_not_its_request(
    store: PeeweeStore,
):
    """The compensation is a second transaction of the same call: handed the batch (so it is a
    savepoint of it, committed with it) but not the request (a retry must run again)."""
    service = CredentialService(store, Leaky(cookie_min=100, cookie_max=199))
    with store.batch() as batch, pytest.raises(ExternalFailure):
        service.acquire(in_job(ALICE, 1), 0, Unit(Request("n1-c-1", "NodeAcquire", "d"), batch))
    [pending] = service.pending_cleanups()
    assert pending.attempts == 1 and "still busy" in pending.last_error
    assert recorded_rids(store) == [] and credential_ids(store) == set()


def test_a_verb_undone_in_its_batch_leaves_its_request_unclaimed_for_its_rerun(
    service: CredentialService,
):
    """What the group commit does with a verb another DRCS's lock undid: the savepoint that
    claimed the request rolled back, so running the verb again alone must record it (a retry
    would otherwise run twice)."""
    store = service.store
    request = Request("r-rerun", "NodeAcquire", requests.digest("NodeAcquire", [0]))
    with store.batch() as batch:
        with pytest.raises(LookupError), store.transaction(Unit(request, batch)):
            raise LookupError("undone after the claim")
        assert not request.recorded
    assert recorded_rids(store) == []
    made = service.acquire(in_job(ALICE, 1), 0, Unit(request)).id
    assert request.recorded
    assert recorded_rids(store) == ["r-rerun"]
    with pytest.raises(requests.Replayed):  # the retry is recognised, never run again
        service.acquire(in_job(ALICE, 1), 0, Unit(Request("r-rerun", "NodeAcquire", "x")))
    assert credential_ids(store) == {made}
