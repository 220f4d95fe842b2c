"""What the core needs from the outside world: a transactional store and a resource provider,
and the optional features a provider declares (checked once by :func:`provider_features`).

The core is written against these protocols only; ``drc.store`` implements the first with
Peewee, ``drc.providers`` the second. Each DRC verb runs inside one :class:`Transaction`, so a
state change is all-or-nothing and a daemon killed mid-verb leaves the store consistent.

What a verb's transaction carries beyond its change travels as an argument, never in ambient
state: the :class:`Unit` the dispatcher hands the verb (the :class:`Request` to record, the
group commit's batch) goes down the verb's call chain to :meth:`Store.transaction`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from drc.core.errors import Code, DrcError
from drc.core.model import Credential, Holder, Limit, LimitScope, Resources, State, Target, Usage


class StoreUnavailable(DrcError):
    """The store's database did not answer (lost, timed out, locked by another process):
    nothing of the transaction was committed. ECONNREFUSED; the message names the database."""

    def __init__(self, message: str) -> None:
        super().__init__(Code.ECONNREFUSED, message)


@dataclass(frozen=True)
class PendingCleanup:
    """External resources of a freed credential still to be released outside the store.

    Written in the same transaction that frees the credential (so a crash right after the
    commit cannot lose it) and deleted only once the provider's ``release_external`` succeeded:
    an external object (an ALPS pdomain) is never forgotten, only late.
    """

    id: int
    credential: int
    resources: Resources
    created: float
    attempts: int = 0
    next_try: float = 0.0
    last_error: str = ""


@dataclass(slots=True)
class Request:
    """An exactly-once request (the DRC link's ``rid``) that the store records in the
    transaction of its change: a retry is then answered from the record, never run again.

    Only the transaction handed it (in a :class:`Unit`) records it, and only once: a second
    transaction of the same call does not claim it again.
    """

    rid: str
    method: str
    digest: str  #: what the request asks, canonically: a retry must match it
    credential: int = 0  #: set by the store when the change created a credential
    recorded: bool = False  #: set by the store once a transaction claimed the request


class Unit:
    """What one verb's write transaction is part of, handed to it explicitly: the
    :class:`Request` to record with the change (or None) and the store's open batch (the group
    commit's shared transaction, of which the verb's transaction is then a savepoint; or None:
    a transaction of its own). The dispatcher makes one per call; a verb forwards it to the
    core, which passes it to :meth:`Store.transaction`."""

    __slots__ = ("batch", "request")

    def __init__(self, request: Request | None = None, batch: Any = None) -> None:
        self.request = request
        self.batch = batch

    def without_request(self) -> Unit:
        """The same batch, no request: a further transaction of the same call (a compensation)
        that must not claim the request."""
        return Unit(None, self.batch)


class SlotAllocator(Protocol):
    """Numbered slots of a named pool, claimed and returned inside the current transaction."""

    def claim_slot(self, pool: str, capacity: int) -> int | None:
        """The lowest free slot below ``capacity``, now taken; None when the pool is full."""

    def return_slot(self, pool: str, slot: int) -> None: ...

    def slots_in_use(self, pool: str) -> int: ...


class Contended(Exception):
    """A verb run inside a group commit (``store.batch()``) met a lock that another
    transaction holds: its savepoint was undone, nothing of it happened. The group commit
    runs it again alone once the group committed (alone, a verb waits for its locks)."""


class Transaction(SlotAllocator, Protocol):
    """One verb's view of the store. What it reads stays true until commit when the verb
    first declared it with the ``lock_*``/``hold_*`` methods below, in this order: its
    credentials, then the limits, then the scopes it counts against (a store whose write
    transactions are exclusive as a whole, as SQLite's, does nothing for them). Verbs that
    take no such lock (an acquire without limits) wait for nobody."""

    # what the transaction will rely on
    def lock_credentials(self, ids: Iterable[int], *, exclusive: bool) -> None:
        """Hold these credentials until commit: shared (an access, token references: no
        release, revoke or free meanwhile) or exclusive (release, grant, revoke: no new
        reference meanwhile). Before reading them. The ``drop_*`` methods hold what they
        touch exclusive themselves."""

    def hold_limits(self) -> None:
        """No limit is set or cleared until commit; before :meth:`limits`."""

    def hold_usage(self, uid: int, gid: int, job: int, scopes: Collection[LimitScope]) -> None:
        """Nobody else counts against these scopes for this uid, gid and job until commit
        (before :meth:`usage`): two acquires under one limit never both see room."""

    # credentials
    def next_credential_id(self) -> int: ...
    def insert_credential(self, credential: Credential) -> None: ...
    def get_credential(self, credential: int, *, count_refs: bool = True) -> Credential | None:
        """``count_refs=False`` leaves ``refs`` at 0: counting costs O(references) per call.
        No row lock of its own: lock the credential first (:meth:`lock_credentials`)."""

    def list_credentials(self, ids: Iterable[int] | None = None) -> list[Credential]: ...
    def set_state(self, credential: int, state: State) -> None: ...
    def bump_epoch(self, credential: int) -> None: ...
    def delete_credentials(self, ids: Iterable[int]) -> None: ...
    def usage(self, uid: int, gid: int, job: int, scopes: Collection[LimitScope]) -> Usage:
        """The counts limits of ``scopes`` need (:data:`drc.core.model.COUNTED_BY`); 0 for
        the others."""

    # access control list
    def add_grant(self, credential: int, target: Target) -> bool:
        """False when the grant already existed."""

    def remove_grant(self, credential: int, target: Target) -> bool:
        """False when there was no such grant."""

    # references
    def add_reference(self, credential: int, holder: Holder, owner: bool) -> bool:
        """False when the holder already held one (a reference is an association)."""

    def drop_reference(self, credential: int, holder: Holder) -> bool: ...
    def has_reference(self, credential: int, holder: Holder) -> bool: ...
    def tenants_on_node(self, credential: int, node: str) -> set[tuple[str, int]]: ...
    def reference_counts(self, ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """credential -> (references, owner references), for every id given."""

    def drop_job_references(self, jobs: Iterable[int]) -> set[int]:
        """Drop every reference of these jobs on every node; the credentials touched, held
        exclusive until commit (as by every ``drop_*``: they are settled next)."""

    def drop_job_references_on_node(self, node: str, jobs: Iterable[int]) -> set[int]:
        """Drop the jobs' references held on ``node`` only; credential ids touched."""

    def set_node_server(self, node: str, server: str, now: float) -> bool:
        """Record which DRCS ``node`` follows; True when that changed."""

    def set_nodes_server(self, follows: list[tuple[str, str]], now: float) -> None:
        """Record which DRCS each of these nodes follows (node, server): nodes that moved
        together, each named once."""

    def credential_epochs(self, ids: Iterable[int]) -> dict[int, int]:
        """credential -> its epoch, for those of ``ids`` that exist."""

    def node_servers(self) -> list[tuple[str, str, float]]:
        """(node, DRCS it follows, since) for every node that said so."""

    def drop_node_references(self, node: str) -> set[int]: ...
    def drop_process_references(self, node: str, processes: Iterable[tuple[int, int]]) -> set[int]:
        """Drop references of these (pid, start time) holders on ``node``."""

    def outstanding_jobs(self) -> set[int]: ...
    def pins(self) -> list[tuple[int, int]]:
        """(pinning uid, credential) of every pin, by uid then credential."""

    def drop_pins(self, uid: int) -> set[int]:
        """Drop every pin of ``uid``; the credentials they were on."""

    def job_credential(self, job: int) -> int:
        """The lowest credential id a JOB reference of ``job`` (any node) holds; 0 if none."""

    def process_holders(self, node: str) -> set[tuple[int, int]]:
        """(pid, start time) of every process holding a reference on ``node``."""

    def holders(self, ids: Iterable[int]) -> dict[int, list[Holder]]:
        """credential -> who holds its references (jobs, processes, pins), for each id."""

    # nodes
    def node_connected(
        self, node: str, boot_id: str, seen: float, follows: tuple[str, float] | None = None
    ) -> str | None:
        """Record the node's boot id (and ``follows``: the DRCS it follows, since when); the
        boot id recorded before (None: its first hello)."""

    def node_count(self) -> int:
        """Node daemons that have said hello since the store was created."""

    # external cleanups (providers with ``release_external``)
    def add_pending_cleanup(self, credential: int, resources: Resources, now: float) -> int:
        """Record resources to release after commit; the new row's id."""

    def pending_cleanups(
        self, credentials: Iterable[int] | None = None, due: float | None = None
    ) -> list[PendingCleanup]:
        """Pending cleanups, oldest first: all, those of ``credentials``, or those due by then."""

    def cleanup_done(self, cleanup: int) -> None: ...
    def cleanup_failed(self, cleanup: int, error: str, next_try: float) -> None:
        """Count a failed attempt, remember its error and when to try again."""

    # limits
    def limits(self) -> list[Limit]: ...
    def set_limit(self, limit: Limit) -> None: ...
    def clear_limit(self, scope: LimitScope, id: int) -> bool: ...


class Store(Protocol):
    def transaction(
        self, unit: Unit | None = None, *, hold: Collection[int] = (), exclusive: bool = False
    ) -> AbstractContextManager[Transaction]:
        """A write transaction: committed on normal exit, rolled back on error. Isolated from
        others by the locks its verb declares (:class:`Transaction`): the credentials
        ``hold`` are held from its start, shared or ``exclusive``
        (:meth:`Transaction.lock_credentials`; a store may take them in the round trip that
        opens it).

        With a ``unit``: its request is recorded in it (raising the store's replay error when
        the request was committed before), and inside its batch it is a savepoint of the
        batch's transaction, so a failing verb undoes only itself."""

    def snapshot(self) -> AbstractContextManager[Transaction]:
        """A consistent read-only view."""

    def describe(self) -> dict[str, object]:
        """Backend, schema version … for ``drccli status``."""


class Provider(Protocol):
    """Server half of a provider: where a credential's network resources come from.

    Anything beyond these members is an optional feature: a Protocol below that the provider
    names in its ``features`` (like a Slurm plugin's ops table). The core checks the
    declaration once, when the service is built (:func:`provider_features`): a declared
    feature with a missing or misspelt member, or a feature member the provider does not
    declare, fails there with the name of what is wrong, instead of the core silently going
    without the feature.
    """

    name: str
    #: The optional features this provider offers: Protocols of :data:`FEATURES`.
    features: tuple[type, ...]

    @property
    def capacity(self) -> int:
        """Credentials it can back at once (the default per-user limit is a share of it)."""

    def allocate(self, credential: int, slots: SlotAllocator) -> Resources:
        """Raise DrcError(ENOSPC) when exhausted, CRED_EXTERNAL_FAILURE when a tool failed."""

    def free(self, resources: Resources, slots: SlotAllocator) -> None: ...

    def describe(self, slots: SlotAllocator) -> dict[str, object]: ...


# -- optional provider features -----------------------------------------------------------


class ExternalObjects(Protocol):
    """Resources that also live outside the store (ALPS pdomains, Slingshot VNIs in cleanup).

    ``allocate`` creates the external object inside the verb's transaction; if that transaction
    then fails the core calls ``release_external`` to compensate. ``free`` only does the store
    side; the core calls ``release_external`` after the freeing transaction committed, from a
    durable pending-cleanup record, and retries it until it succeeds. A provider without this
    feature (the pool) pays nothing. ``allocate`` raises :class:`ExternalFailure` when the
    external object may already exist (a timed-out create), so the core compensates for it too.
    """

    #: Seconds before the first retry of a failed release (doubled per attempt, capped).
    cleanup_retry_interval: float

    def release_external(self, resources: Resources) -> None:
        """Remove the external object; idempotent (already gone is success). Raise on failure:
        :class:`NotYet` when it says when trying again can first succeed."""

    def describe_external(self, resources: Resources) -> str:
        """A short name of the external object for logs and ``drccli status``."""


class ExternalFailure(DrcError):
    """CRED_EXTERNAL_FAILURE from ``allocate``, naming the external object that may exist
    (``leftover``) so the core removes it with the failed transaction."""

    def __init__(self, message: str, leftover: Resources | None = None) -> None:
        super().__init__(Code.CRED_EXTERNAL_FAILURE, message)
        self.leftover = leftover


class NotYet(RuntimeError):
    """From ``release_external``: the object cannot go before ``retry_at`` (a quarantine);
    the core schedules its next try then rather than after the usual backoff."""

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at


class StoreBound(Protocol):
    """A provider that reads the store outside any verb's transaction (in
    ``release_external``): the service hands it the store once, at construction."""

    def bind_store(self, store: Store) -> None: ...


class NodeObjects(Protocol):
    """Each node serving an access builds objects of its own for the credential (Slingshot
    CXI services) and owes their removal once the credential is freed.

    The service records the debt in the access transaction, before the node learns the
    answer, and answers the node's questions about it; what a debt is stays the provider's.
    """

    def node_reference(self, tx: Transaction, cred: Credential, node: str) -> None:
        """In the access transaction: ``node`` will build objects for ``cred``."""

    def node_state(
        self, tx: Transaction, node: str
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(live, owed) (credential, object) pairs of ``node``: the objects to keep and
        those of freed credentials still to remove."""

    def node_cleaned(
        self, tx: Transaction, node: str, credentials: list[int], now: float
    ) -> list[int]:
        """``node`` removed its objects of these freed credentials: those it owed."""


#: Every optional feature a provider may declare, by the name errors use.
FEATURES: dict[type, str] = {
    ExternalObjects: "ExternalObjects",
    StoreBound: "StoreBound",
    NodeObjects: "NodeObjects",
}


def feature_members(feature: type) -> frozenset[str]:
    """The names a provider offering ``feature`` must have: its attributes and methods."""
    names = set(vars(feature).get("__annotations__", {}))
    names.update(
        name
        for name, value in vars(feature).items()
        if not name.startswith("_") and (callable(value) or isinstance(value, property))
    )
    return frozenset(names)


def provider_features(provider: Provider) -> frozenset[type]:
    """The features ``provider`` declares, checked: raises TypeError naming the provider and
    the fault when it declares something that is not a feature, lacks a member of a declared
    one (a misspelling), or has a member of a feature it does not declare."""
    label = f"provider {getattr(provider, 'name', type(provider).__name__)!r}"
    declared = getattr(type(provider), "features", None)
    if not isinstance(declared, tuple):
        raise TypeError(f"{label}: class attribute 'features' must be a tuple of features")
    unknown = [f for f in declared if f not in FEATURES]
    if unknown:
        raise TypeError(
            f"{label} declares {unknown!r}, not features (known: {', '.join(FEATURES.values())})"
        )
    for feature, fname in FEATURES.items():
        members = feature_members(feature)
        present = sorted(m for m in members if hasattr(provider, m))
        if feature in declared:
            missing = sorted(members - set(present))
            if missing:
                raise TypeError(f"{label} declares {fname} but has no {', '.join(missing)}")
            uncallable = [
                m
                for m in present
                if callable(getattr(feature, m, None)) and not callable(getattr(provider, m))
            ]
            if uncallable:
                raise TypeError(f"{label}: {fname} member(s) {', '.join(uncallable)} not callable")
        elif present:
            raise TypeError(
                f"{label} has {', '.join(present)} of {fname} but does not declare {fname} "
                "in its features: declare it, or rename the member(s)"
            )
    return frozenset(declared)
