"""Releasing a provider's external objects (ALPS pdomains …): late, never lost.

Creation happens in ``allocate``, inside the acquire transaction; if that transaction fails,
:meth:`ExternalCleanup.compensate` removes the object again (or records it). Removal never
happens inside a transaction: the freeing transaction writes a pending-cleanup row beside the
credential's deletion (:meth:`ExternalCleanup.record`), and after the commit
:meth:`ExternalCleanup.release` removes the object and deletes the row. A failed removal stays
recorded (WARNING with its name, attempts, next try with backoff) for :meth:`retry` and shows
in ``drccli status``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from drc.core.model import Credential, Resources
from drc.core.ports import (
    ExternalFailure,
    ExternalObjects,
    NotYet,
    PendingCleanup,
    Store,
    Transaction,
    Unit,
)

audit = logging.getLogger("drc.audit")
log = logging.getLogger("drc.core")

#: Longest wait between two attempts to release an external resource (seconds).
CLEANUP_BACKOFF_MAX = 3600.0


def leftover_of(error: BaseException) -> Resources | None:
    """The external object a failed ``allocate`` may have left behind (see ExternalObjects)."""
    return error.leftover if isinstance(error, ExternalFailure) else None


class ExternalCleanup:
    """The external objects of a provider that declares :class:`ExternalObjects`; with
    ``external=None`` (the pool) every method does nothing and costs nothing."""

    def __init__(
        self, store: Store, external: ExternalObjects | None, clock: Callable[[], float]
    ) -> None:
        self.store, self.external, self.clock = store, external, clock
        self.enabled = external is not None

    @property
    def retry_interval(self) -> float:
        """Seconds between DRCS's passes over due cleanups (the provider's first backoff)."""
        return float(self.external.cleanup_retry_interval) if self.external else 60.0

    def name(self, resources: Resources) -> str:
        return self.external.describe_external(resources) if self.external else repr(resources)

    def _backoff(self, attempts: int) -> float:
        return min(self.retry_interval * 2 ** max(attempts - 1, 0), CLEANUP_BACKOFF_MAX)

    def record(self, tx: Transaction, freed: Iterable[Credential]) -> None:
        """In the freeing transaction: the removal owed outside can never be lost."""
        if not self.enabled:
            return
        now = self.clock()
        for cred in freed:
            tx.add_pending_cleanup(cred.id, cred.resources, now)

    def release(
        self, credentials: Iterable[int] | None = None, due: float | None = None
    ) -> tuple[int, int]:
        """Try the pending cleanups (of ``credentials``, or due by ``due``): (done, failed)."""
        if not self.enabled:
            return 0, 0
        with self.store.snapshot() as tx:
            pending = tx.pending_cleanups(credentials, due)
        done = failed = 0
        for item in pending:
            error, retry_at = self._attempt(item.resources)
            with self.store.transaction() as tx:
                if error is None:
                    tx.cleanup_done(item.id)
                else:
                    attempts = item.attempts + 1
                    next_try = self.clock() + self._backoff(attempts)
                    if retry_at is not None:  # the provider knows when (a quarantine)
                        next_try = min(next_try, retry_at)
                    tx.cleanup_failed(item.id, error, next_try)
            if error is None:
                done += 1
                audit.info(
                    "external-release credential=%d %s", item.credential, self.name(item.resources)
                )
            else:
                failed += 1
                log.warning(
                    "could not remove %s of freed credential %d (attempt %d, will retry): %s",
                    self.name(item.resources),
                    item.credential,
                    item.attempts + 1,
                    error,
                )
        return done, failed

    def retry(self) -> tuple[int, int]:
        """Every pending cleanup that is due: (done, still failing).

        DRCS runs this periodically; retrying cleanup is polling by nature (ALPS tells nobody
        when a busy pdomain becomes removable). Job expiration stays event-driven.
        """
        return self.release(due=self.clock())

    def _try(self, resources: Resources) -> str | None:
        """None on success, else the error's text (every exception counts: never lose one)."""
        return self._attempt(resources)[0]

    def _attempt(self, resources: Resources) -> tuple[str | None, float | None]:
        """:meth:`_try`, plus when to try again if the error says (its ``retry_at``)."""
        if self.external is None:  # callers return early: never claim a removal not done
            return "the provider declares no ExternalObjects", None
        try:
            self.external.release_external(resources)
        except NotYet as e:
            return str(e), e.retry_at
        except Exception as e:  # any failure is recorded and retried
            return str(e) or type(e).__name__, None
        return None, None

    def compensate(self, resources: Resources, credential: int, unit: Unit | None = None) -> None:
        """An acquire failed after its external object was created: remove it, else record it
        (in the failed verb's batch, if it ran in one: ``unit`` carries no request)."""
        if not self.enabled:
            return
        error = self._try(resources)
        if error is None:
            audit.info(
                "external-release credential=%d %s (acquire failed)",
                credential,
                self.name(resources),
            )
            return
        log.warning(
            "acquire of credential %d failed and %s could not be removed (will retry): %s",
            credential,
            self.name(resources),
            error,
        )
        try:
            with self.store.transaction(unit) as tx:
                row = tx.add_pending_cleanup(credential, resources, self.clock())
                tx.cleanup_failed(row, error, self.clock() + self._backoff(1))
        except Exception:
            log.error(
                "LEAKED %s of failed credential %d: neither removed nor recorded; remove by hand",
                self.name(resources),
                credential,
                exc_info=True,
            )

    def pending(self) -> list[PendingCleanup]:
        if not self.enabled:
            return []
        with self.store.snapshot() as tx:
            return tx.pending_cleanups()

    def describe(self, p: PendingCleanup) -> dict[str, Any]:
        return {
            "credential": p.credential,
            "object": self.name(p.resources),
            "attempts": p.attempts,
            "next_try": p.next_try,
            "last_error": p.last_error,
        }
