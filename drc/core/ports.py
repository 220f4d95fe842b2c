"""What the core needs from the outside world: a transactional store and a resource provider.

The core is written against these protocols only; ``drc.store`` implements the first with
Peewee, ``drc.providers`` the second. Each DRC verb runs inside one :class:`Transaction`, so a
state change is all-or-nothing and a daemon killed mid-verb leaves the store consistent.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

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


class SlotAllocator(Protocol):
    """Numbered slots of a named pool, claimed and returned inside the current transaction."""

    def claim_slot(self, pool: str, capacity: int) -> int | None:
        """The lowest free slot below ``capacity``, now taken; None when the pool is full."""

    def return_slot(self, pool: str, slot: int) -> None: ...

    def slots_in_use(self, pool: str) -> int: ...


class Transaction(SlotAllocator, Protocol):
    # credentials
    def next_credential_id(self) -> int: ...
    def insert_credential(self, credential: Credential) -> None: ...
    def get_credential(self, credential: int, *, count_refs: bool = True) -> Credential | None:
        """``count_refs=False`` leaves ``refs`` at 0: counting costs O(references) per call.
        No row lock: a :meth:`Store.transaction` is exclusive as a whole."""

    def list_credentials(self, ids: Iterable[int] | None = None) -> list[Credential]: ...
    def set_state(self, credential: int, state: State) -> None: ...
    def bump_epoch(self, credential: int) -> None: ...
    def delete_credentials(self, ids: Iterable[int]) -> None: ...
    def usage(self, uid: int, gid: int, job: int) -> Usage: ...

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
        """Drop every reference of these jobs on every node; the credentials touched."""

    def drop_job_references_on_node(self, node: str, jobs: Iterable[int]) -> set[int]:
        """Drop the jobs' references held on ``node`` only; credential ids touched."""

    def set_node_server(self, node: str, server: str, now: float) -> bool:
        """Record which DRCS ``node`` follows; True when that changed."""

    def node_servers(self) -> list[tuple[str, str, float]]:
        """(node, DRCS it follows, since) for every node that said so."""

    def drop_node_references(self, node: str) -> set[int]: ...
    def drop_process_references(self, node: str, processes: Iterable[tuple[int, int]]) -> set[int]:
        """Drop references of these (pid, start time) holders on ``node``."""

    def outstanding_jobs(self) -> set[int]: ...
    def job_credential(self, job: int) -> int:
        """The lowest credential id a JOB reference of ``job`` (any node) holds; 0 if none."""

    def process_holders(self, node: str) -> set[tuple[int, int]]:
        """(pid, start time) of every process holding a reference on ``node``."""

    def holders(self, ids: Iterable[int]) -> dict[int, list[Holder]]:
        """credential -> who holds its references (jobs, processes, pins), for each id."""

    # nodes
    def node_boot_id(self, node: str) -> str | None: ...
    def node_count(self) -> int:
        """Node daemons that have said hello since the store was created."""

    def set_node_boot_id(self, node: str, boot_id: str, now: float) -> None: ...

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
    def transaction(self) -> AbstractContextManager[Transaction]:
        """An exclusive write transaction: committed on normal exit, rolled back on error."""

    def snapshot(self) -> AbstractContextManager[Transaction]:
        """A consistent read-only view."""

    def describe(self) -> dict[str, object]:
        """Backend, schema version … for ``drccli status``."""


class Provider(Protocol):
    """Server half of a provider: where a credential's network resources come from."""

    name: str

    def allocate(self, credential: int, slots: SlotAllocator) -> Resources:
        """Raise DrcError(ENOSPC) when exhausted, CRED_EXTERNAL_FAILURE when a tool failed."""

    def free(self, resources: Resources, slots: SlotAllocator) -> None: ...

    def describe(self, slots: SlotAllocator) -> dict[str, object]: ...


class ExternalProvider(Provider, Protocol):
    """A provider whose resources also live outside the store (ALPS pdomains).

    ``allocate`` creates the external object inside the verb's transaction; if that transaction
    then fails the core calls ``release_external`` to compensate. ``free`` only does the store
    side; the core calls ``release_external`` after the freeing transaction committed, from a
    durable pending-cleanup record, and retries it until it succeeds. The core recognises such
    a provider by the presence of ``release_external``: the pool provider has none and pays
    nothing. An error raised by ``allocate`` after the external object may already exist (a
    timed-out create) carries it as ``leftover`` (a :class:`Resources`), so the core
    compensates for it too.
    """

    #: Seconds before the first retry of a failed release (doubled per attempt, capped).
    cleanup_retry_interval: float

    def release_external(self, resources: Resources) -> None:
        """Remove the external object; idempotent (already gone is success). Raise on failure."""

    def describe_external(self, resources: Resources) -> str:
        """A short name of the external object for logs and ``drccli status``."""
