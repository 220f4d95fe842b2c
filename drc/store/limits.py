"""Store operations on limits (table ``credential_limit``).

Mixed into :class:`drc.store.sql.PeeweeTransaction`. Every acquire reads the limits (a
statement of :data:`HOT_SQL`); setting and clearing one are Peewee queries (admin verbs).
"""

from __future__ import annotations

from collections.abc import Callable

from drc.core.model import Limit, LimitScope
from drc.store.models import Models
from drc.store.statements import Statements


class LimitRows:
    models: Models
    _sql: Statements
    lock_limit_changes: Callable[[], None]  # the transaction's (drc.store.sql)

    def limits(self) -> list[Limit]:
        return [Limit(LimitScope(s), t, v) for s, t, v in self._sql.rows("limits")]

    def set_limit(self, limit: Limit) -> None:
        self.lock_limit_changes()  # acquires that read the limits commit first
        lim = self.models.limit
        lim.insert(scope=limit.scope.value, target=limit.id, value=limit.value).on_conflict(
            conflict_target=[lim.scope, lim.target], update={lim.value: limit.value}
        ).execute()

    def clear_limit(self, scope: LimitScope, id: int) -> bool:
        self.lock_limit_changes()
        lim = self.models.limit
        return bool(lim.delete().where((lim.scope == scope.value) & (lim.target == id)).execute())
