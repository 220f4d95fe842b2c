"""Store operations on the slots of resource pools (tables ``free_slot``, ``counter``).

Mixed into :class:`drc.store.sql.PeeweeTransaction`. A pool hands out slots 0..capacity-1:
a returned slot is reused lowest first, else the pool's high-water mark (a ``pool:<name>``
counter) grows. Claiming and returning are statements of :data:`HOT_SQL`; counting is a
Peewee query.
"""

from __future__ import annotations

from drc.store.models import Models
from drc.store.statements import Statements


class SlotRows:
    models: Models
    _sql: Statements
    postgresql: bool

    def claim_slot(self, pool: str, capacity: int) -> int | None:
        """Reuse the lowest returned slot, else extend the high-water mark (one statement
        each). Exact across DRCS: a returned slot is one row, claimed by deleting it
        (PostgreSQL skips rows another transaction is claiming); the mark is one counter row,
        locked by its update until commit."""
        claim = "claim_free_slot_skip_locked" if self.postgresql else "claim_free_slot"
        free = self._sql.rows(claim, (pool, pool, capacity))
        if free:
            return free[0][0]
        if capacity < 1:
            return None
        taken = self._sql.rows("extend_pool", (f"pool:{pool}", capacity))
        return taken[0][0] if taken else None

    def return_slot(self, pool: str, slot: int) -> None:
        self._sql.execute("return_slot", (pool, slot))

    def slots_in_use(self, pool: str) -> int:
        counter, free_slot = self.models.counter, self.models.free_slot
        high = counter.select(counter.value).where(counter.name == f"pool:{pool}").scalar()
        free = free_slot.select().where(free_slot.pool == pool).count()
        return (high or 0) - free
