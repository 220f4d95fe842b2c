"""What the core needs from the outside world: a transactional store and a resource provider.

The core is written against these protocols only; ``drc.store`` implements the first with
Peewee, ``drc.providers`` the second. Each DRC verb runs inside one :class:`Transaction`, so a
state change is all-or-nothing and a daemon killed mid-verb leaves the store consistent.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Protocol

from drc.core.model import Credential, Holder, Limit, LimitScope, Resources, State, Target, Usage


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
    def get_credential(self, credential: int, *, for_update: bool = False) -> Credential | None: ...
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

    def drop_node_references(self, node: str) -> set[int]: ...
    def drop_process_references(self, node: str, processes: Iterable[tuple[int, int]]) -> set[int]:
        """Drop references of these (pid, start time) holders on ``node``."""

    def outstanding_jobs(self) -> set[int]: ...
    def process_holders(self, node: str) -> set[tuple[int, int]]:
        """(pid, start time) of every process holding a reference on ``node``."""

    # nodes
    def node_boot_id(self, node: str) -> str | None: ...
    def set_node_boot_id(self, node: str, boot_id: str, now: float) -> None: ...

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
