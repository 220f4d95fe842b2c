"""Store operations on external cleanups still owed (table ``pending_cleanup``).

Mixed into :class:`drc.store.sql.PeeweeTransaction`. A provider whose release failed leaves a
row here, retried later; rare, so Peewee queries only.
"""

from __future__ import annotations

from collections.abc import Iterable

from drc.core.model import Resources
from drc.core.ports import PendingCleanup
from drc.store.models import Models


class CleanupRows:
    models: Models

    def add_pending_cleanup(self, credential: int, resources: Resources, now: float) -> int:
        r = resources
        return self.models.pending_cleanup.insert(
            credential=credential,
            provider=r.provider,
            cookie1=r.cookie1,
            cookie2=r.cookie2,
            ptag=r.ptag,
            provider_data=r.data,
            created=now,
            next_try=now,
        ).execute()

    def pending_cleanups(
        self, credentials: Iterable[int] | None = None, due: float | None = None
    ) -> list[PendingCleanup]:
        p = self.models.pending_cleanup
        query = p.select().order_by(p.id)
        if credentials is not None:
            ids = sorted(set(credentials))
            if not ids:
                return []
            query = query.where(p.credential.in_(ids))
        if due is not None:
            query = query.where(p.next_try <= due)
        return [
            PendingCleanup(
                id=row.id,
                credential=row.credential,
                resources=Resources(
                    row.provider, row.cookie1, row.cookie2, row.ptag, row.provider_data
                ),
                created=row.created,
                attempts=row.attempts,
                next_try=row.next_try,
                last_error=row.last_error,
            )
            for row in query
        ]

    def cleanup_done(self, cleanup: int) -> None:
        p = self.models.pending_cleanup
        p.delete().where(p.id == cleanup).execute()

    def cleanup_failed(self, cleanup: int, error: str, next_try: float) -> None:
        p = self.models.pending_cleanup
        p.update(attempts=p.attempts + 1, last_error=error[:512], next_try=next_try).where(
            p.id == cleanup
        ).execute()
