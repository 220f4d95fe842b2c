"""Who may do what beyond the ACL: admins, who may create PERSISTENT credentials, and the
configured default per-user limit."""

from __future__ import annotations

from dataclasses import dataclass

from drc.core.model import Caller, Limit, LimitScope


@dataclass(frozen=True)
class Policy:
    admin_gids: frozenset[int] = frozenset()
    persistent_uids: frozenset[int] = frozenset()
    persistent_gids: frozenset[int] = frozenset()
    #: drc.conf's ``user_limit``: the user-default limit while none is stored (None: none).
    user_limit: int | None = None

    def is_admin(self, caller: Caller) -> bool:
        return caller.uid == 0 or bool(caller.all_gids & self.admin_gids)

    def may_persist(self, caller: Caller) -> bool:
        return (
            self.is_admin(caller)
            or caller.uid in self.persistent_uids
            or bool(caller.all_gids & self.persistent_gids)
        )

    def limits_for(self, caller: Caller, stored: list[Limit]) -> list[Limit]:
        """The limits an acquire by ``caller`` is checked against: the stored ones, plus the
        configured user default when no user-default limit is stored. Root is not bound by
        the configured default: it is trusted with the pool (and may change the config)."""
        if (
            self.user_limit is None
            or caller.uid == 0
            or any(limit.scope is LimitScope.USER_DEFAULT for limit in stored)
        ):
            return stored
        return [*stored, Limit(LimitScope.USER_DEFAULT, 0, self.user_limit)]
