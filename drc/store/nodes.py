"""Store operations on nodes: boot ids and the DRCS each follows (``node``, ``node_follow``).

Mixed into :class:`drc.store.sql.PeeweeTransaction`. Rare (a node connecting or failing
over), so Peewee queries only.
"""

from __future__ import annotations

from drc.store.models import Models


class NodeRows:
    models: Models

    def node_count(self) -> int:
        return self.models.node.select().count()

    def node_boot_id(self, node: str) -> str | None:
        n = self.models.node
        return n.select(n.boot_id).where(n.name == node).scalar()

    def set_node_server(self, node: str, server: str, now: float) -> bool:
        """Record that ``node`` follows DRCS ``server``; True when that changed."""
        f = self.models.node_follow
        if f.select(f.server).where(f.node == node).scalar() == server:
            return False
        f.insert(node=node, server=server, since=now).on_conflict(
            conflict_target=[f.node], update={f.server: server, f.since: now}
        ).execute()
        return True

    def node_servers(self) -> list[tuple[str, str, float]]:
        """(node, DRCS it follows, since when) for every node that said so."""
        f = self.models.node_follow
        rows = f.select(f.node, f.server, f.since).order_by(f.node).tuples()
        return [(n, s, float(t)) for n, s, t in rows]

    def set_node_boot_id(self, node: str, boot_id: str, now: float) -> None:
        n = self.models.node
        n.insert(name=node, boot_id=boot_id, seen=now).on_conflict(
            conflict_target=[n.name], update={n.boot_id: boot_id, n.seen: now}
        ).execute()
