"""The node verbs: what a node daemon (DRCC, root) asks DRCS, declared once.

DRCS implements them (:class:`drc.server.exports.ServerNodeVerbs`) and serves them on the DRC
link and on its bus; DRCC calls them through a :class:`drc.export.Stub` of this class. Both
sides read names and signatures from here, so neither needs the other's code, and a renamed
verb breaks DRCC's fast tests instead of a deployed node.

The caller is the wire form of :class:`drc.core.model.Caller` (:func:`drc.wire.caller_to_wire`);
a credential is :func:`drc.wire.credential_to_wire`'s dictionary.
"""

from __future__ import annotations

from typing import Any

from drc.export import PeerCredentials, method

#: DRCS answers a parked ``NodeWatch`` at least this often, empty when nothing changed (a
#: heartbeat): a node that hears nothing for :data:`WATCH_HEARTBEAT` + :data:`WATCH_MARGIN`
#: seconds takes its DRCS for silent (hung, or its host gone) and follows another one, without
#: waiting for a call of its own to time out. Every heartbeat costs each following node one
#: MUNGE-signed round trip: 10,000 nodes make about 2,000 polls a second.
WATCH_HEARTBEAT = 4
#: Polls end on DRCS's whole-second ticks (up to 1 s late), plus the round trip.
WATCH_MARGIN = 2


class NodeVerbs:
    """Declarations only: each body says so, an implementation overrides it."""

    def _declared(self) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} does not implement this node verb")

    @method("ss", "b")
    def node_hello(self, peer: PeerCredentials, node: str, boot_id: str) -> bool:
        """A DRCC started: True (and its references are gone) when the node rebooted."""
        return self._declared()

    @method("a{sv}u", "a{sv}")
    def node_acquire(self, peer: PeerCredentials, caller: dict, flags: int) -> dict[str, Any]:
        return self._declared()

    @method("a{sv}u", "a{sv}")
    def node_access(self, peer: PeerCredentials, caller: dict, credential: int) -> dict[str, Any]:
        return self._declared()

    @method("a{sv}", "u")
    def node_job_credential(self, peer: PeerCredentials, caller: dict) -> int:
        """The credential the caller's job holds on any node (lowest id), or 0."""
        return self._declared()

    @method("a{sv}uuu", "")
    def node_grant(
        self, peer: PeerCredentials, caller: dict, credential: int, target: int, flags: int
    ) -> None:
        return self._declared()

    @method("a{sv}uuu", "")
    def node_revoke(
        self, peer: PeerCredentials, caller: dict, credential: int, target: int, flags: int
    ) -> None:
        return self._declared()

    @method("a{sv}u", "b")
    def node_release(self, peer: PeerCredentials, caller: dict, credential: int) -> bool:
        return self._declared()

    @method("a{sv}u", "s")
    def node_token(self, peer: PeerCredentials, caller: dict, credential: int) -> str:
        return self._declared()

    @method("saa{sv}", "au")
    def node_token_references(
        self, peer: PeerCredentials, node: str, refs: list[dict]
    ) -> list[int]:
        return self._declared()

    @method("sau", "au")
    def node_jobs_ended(self, peer: PeerCredentials, node: str, jobs: list[int]) -> list[int]:
        return self._declared()

    @method("sau", "au")
    def node_jobs_ended_here(self, peer: PeerCredentials, node: str, jobs: list[int]) -> list[int]:
        return self._declared()

    @method("sa(ut)", "au")
    def node_processes_exited(self, peer: PeerCredentials, node: str, processes: list) -> list[int]:
        return self._declared()

    @method("s", "a(ut)")
    def node_processes(self, peer: PeerCredentials, node: str) -> list[tuple[int, int]]:
        return self._declared()

    @method("sau", "a(uu)")
    def node_epochs(
        self, peer: PeerCredentials, node: str, credentials: list[int]
    ) -> list[tuple[int, int]]:
        return self._declared()

    @method("suu", "(sbua(uu))")
    async def node_watch(
        self, peer: PeerCredentials, generation: str, since: int, timeout: int
    ) -> tuple[str, bool, int, list[tuple[int, int]]]:
        """Long poll for revocations and frees; answered within ``timeout`` seconds, at most
        :data:`WATCH_HEARTBEAT`."""
        return self._declared()

    @method("ss", "")
    def node_follow(self, peer: PeerCredentials, node: str, server: str) -> None:
        return self._declared()

    @method("", "a{sv}")
    def server_info(self, peer: PeerCredentials) -> dict[str, Any]:
        return self._declared()

    @method("s", "(a(uu)a(uu))")
    def node_slingshot_state(
        self, peer: PeerCredentials, node: str
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self._declared()

    @method("sau", "au")
    def node_slingshot_cleaned(
        self, peer: PeerCredentials, node: str, credentials: list[int]
    ) -> list[int]:
        return self._declared()
