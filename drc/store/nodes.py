"""Store operations on nodes: boot ids and the DRCS each follows (``node``, ``node_follow``).

Mixed into :class:`drc.store.sql.PeeweeTransaction`. A hello and a fail-over run once per
node, but a whole cluster does them at once (10,000 hellos when DRCS restarts, 5,000 follows
when one of two fails): those are statements of :data:`drc.store.statements.HOT_SQL`; the
listings are Peewee queries.
"""

from __future__ import annotations

from collections.abc import Iterable

from drc.store.models import Models
from drc.store.statements import Statements, chunks, padded


class NodeRows:
    models: Models
    _sql: Statements
    postgresql: bool

    def node_count(self) -> int:
        return self.models.node.select().count()

    def node_connected(
        self, node: str, boot_id: str, seen: float, follows: tuple[str, float] | None = None
    ) -> str | None:
        """Record ``node``'s boot id (and with ``follows``, the DRCS it follows and since
        when); the boot id recorded before, None for a first hello. One round trip on
        PostgreSQL, where it was three: a cluster's hellos come all at once."""
        if self.postgresql:
            if follows is None:
                rows = self._sql.rows("node_connected", (node, node, boot_id, seen))
            else:
                server, since = follows
                params = (node, node, boot_id, seen, node, server, since)
                rows = self._sql.rows("node_connected_following", params)
        else:
            rows = self._sql.rows("node_boot_id", (node,))
            self._sql.execute("set_node_boot_id", (node, boot_id, seen))
            if follows is not None:
                self.set_node_server(node, *follows)
        return rows[0][0] if rows else None

    def set_node_server(self, node: str, server: str, now: float) -> bool:
        """Record that ``node`` follows DRCS ``server``; True when that changed."""
        return bool(self._sql.rows("set_node_server", (node, server, now)))

    def set_nodes_server(self, follows: list[tuple[str, str]], now: float) -> None:
        """Record the DRCS each of these nodes follows: on PostgreSQL one statement per
        thousand nodes (a fail-over moves thousands at once); SQLite, local, row by row."""
        if not self.postgresql:
            for node, server in follows:
                self.set_node_server(node, server, now)
            return
        for chunk in chunks(follows, 1000):
            nodes, servers = [n for n, _s in chunk], [s for _n, s in chunk]
            self._sql.execute("set_nodes_server", (now, nodes, servers))

    def credential_epochs(self, ids: Iterable[int]) -> dict[int, int]:
        """credential -> epoch of those of ``ids`` that exist; one statement per chunk."""
        epochs: dict[int, int] = {}
        for chunk in chunks(ids):
            chunk = padded(chunk)
            epochs.update(self._sql.rows("credential_epochs", chunk, in_size=len(chunk)))
        return epochs

    def node_servers(self) -> list[tuple[str, str, float]]:
        """(node, DRCS it follows, since when) for every node that said so."""
        f = self.models.node_follow
        rows = f.select(f.node, f.server, f.since).order_by(f.node).tuples()
        return [(n, s, float(t)) for n, s, t in rows]
