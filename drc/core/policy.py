"""Who may do what beyond the ACL: admins, and who may create PERSISTENT credentials."""

from __future__ import annotations

from dataclasses import dataclass

from drc.core.model import Caller


@dataclass(frozen=True)
class Policy:
    admin_gids: frozenset[int] = frozenset()
    persistent_uids: frozenset[int] = frozenset()
    persistent_gids: frozenset[int] = frozenset()

    def is_admin(self, caller: Caller) -> bool:
        return caller.uid == 0 or bool(caller.all_gids & self.admin_gids)

    def may_persist(self, caller: Caller) -> bool:
        return (
            self.is_admin(caller)
            or caller.uid in self.persistent_uids
            or bool(caller.all_gids & self.persistent_gids)
        )
