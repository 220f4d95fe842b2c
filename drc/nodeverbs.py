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

from drc.export import CREDENTIAL, PeerCredentials, method

#: A node's ``NodeWatch`` asks DRCS to answer within this many seconds ([link] heartbeat),
#: empty when nothing changed: a heartbeat. A node that hears nothing for the heartbeat +
#: :data:`WATCH_MARGIN` takes its DRCS for silent (hung, or its host gone) and follows another
#: one, without waiting for a call of its own to time out. Every heartbeat costs DRCS one
#: MUNGE-signed round trip per node (measured: ~0.2 ms of CPU; 10,000 nodes at 4 s: ~2,000
#: polls and ~0.4 of a core per second).
WATCH_HEARTBEAT = 4
#: Polls end on DRCS's whole-second ticks (up to 1 s late), plus the round trip.
WATCH_MARGIN = 2
#: The longest poll DRCS parks.
WATCH_TIMEOUT_MAX = 300


class NodeVerbs:
    """Declarations only: each body says so, an implementation overrides it."""

    def _declared(self) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} does not implement this node verb")

    @method("ss", "b", mutating=True, frees=True, replay=[False])
    def node_hello(self, peer: PeerCredentials, node: str, boot_id: str) -> bool:
        """A DRCC started: True (and its references are gone) when the node rebooted."""
        return self._declared()

    @method("sss", "(bsu)", mutating=True, frees=True, replay=[(False, "", 0)])
    def node_connect(
        self, peer: PeerCredentials, node: str, boot_id: str, server: str
    ) -> tuple[bool, str, int]:
        """A DRCC started and follows ``server``: NodeHello and NodeFollow in one round trip
        and one transaction. Answers (rebooted, generation, seq): where the change feed stood
        before the hello, so the node's first NodeWatch parks at once instead of being
        answered empty to learn them (a replayed request answers generation "": the node then
        learns them from that first poll, as after NodeHello)."""
        return self._declared()

    @method("sssu", "(bsu)", mutating=True, frees=True, replay=[(False, "", 0)])
    def node_connect_feed(
        self, peer: PeerCredentials, node: str, boot_id: str, server: str, timeout: int
    ) -> tuple[bool, str, int]:
        """NodeConnect and the node's first NodeWatch in one request. Answers as NodeConnect;
        over the DRC link the request then stays open: DRCS parks NodeWatch(generation, seq,
        ``timeout``) for it, and that poll's answer comes under the same request id, so the
        node sends no first poll (:mod:`drc.link.protocol`, continued requests). None is
        parked when generation is "" (a replayed request): the node then polls from nothing."""
        return self._declared()

    @method("a{sv}u", "a{sv}", mutating=True, grouped=True, replay=CREDENTIAL)
    def node_acquire(self, peer: PeerCredentials, caller: dict, flags: int) -> dict[str, Any]:
        return self._declared()

    @method("a{sv}u", "a{sv}", mutating=True, grouped=True)
    def node_access(self, peer: PeerCredentials, caller: dict, credential: int) -> dict[str, Any]:
        """Not exactly-once: doing it twice is doing it once. The caller's reference is its
        record: a holder that holds one keeps its access whatever the rules say now, and adding
        it again adds nothing, so a retry after a lost answer (or on another DRCS) answers as
        the first run did, with the credential as it is now. A request id would cost every
        cache miss a row and three index pages in the store for nothing."""
        return self._declared()

    @method("a{sv}", "u", grouped=True)
    def node_job_credential(self, peer: PeerCredentials, caller: dict) -> int:
        """The credential the caller's job holds on any node (lowest id), or 0."""
        return self._declared()

    @method("a{sv}uuu", "", mutating=True, grouped=True, replay=[])
    def node_grant(
        self, peer: PeerCredentials, caller: dict, credential: int, target: int, flags: int
    ) -> None:
        return self._declared()

    @method("a{sv}uuu", "", mutating=True, grouped=True, replay=[])
    def node_revoke(
        self, peer: PeerCredentials, caller: dict, credential: int, target: int, flags: int
    ) -> None:
        return self._declared()

    @method("a{sv}u", "b", mutating=True, frees=True, replay=[True])
    def node_release(self, peer: PeerCredentials, caller: dict, credential: int) -> bool:
        return self._declared()

    @method("a{sv}u", "s", grouped=True)
    def node_token(self, peer: PeerCredentials, caller: dict, credential: int) -> str:
        return self._declared()

    @method("saa{sv}", "au", mutating=True, grouped=True, replay=[[]])
    def node_token_references(
        self, peer: PeerCredentials, node: str, refs: list[dict]
    ) -> list[int]:
        return self._declared()

    @method("sau", "au", mutating=True, frees=True, replay=[[]])
    def node_jobs_ended(self, peer: PeerCredentials, node: str, jobs: list[int]) -> list[int]:
        return self._declared()

    @method("sau", "au", mutating=True, frees=True, replay=[[]])
    def node_jobs_ended_here(self, peer: PeerCredentials, node: str, jobs: list[int]) -> list[int]:
        return self._declared()

    @method("sa(ut)", "au", mutating=True, frees=True, replay=[[]])
    def node_processes_exited(self, peer: PeerCredentials, node: str, processes: list) -> list[int]:
        return self._declared()

    @method("s", "a(ut)", grouped=True)
    def node_processes(self, peer: PeerCredentials, node: str) -> list[tuple[int, int]]:
        return self._declared()

    @method("sau", "a(uu)", grouped=True)
    def node_epochs(
        self, peer: PeerCredentials, node: str, credentials: list[int]
    ) -> list[tuple[int, int]]:
        return self._declared()

    @method("ssau", "(sua(uu))", mutating=True, on_loop=True)
    def node_moved(
        self, peer: PeerCredentials, node: str, server: str, credentials: list[int]
    ) -> tuple[str, int, list[tuple[int, int]]]:
        """A DRCC moved to ``server`` (a fail-over): NodeFollow, the change feed's position
        and NodeEpochs of the credentials it holds, in one round trip and one transaction.
        Answers (generation, seq, [(credential, epoch)]): where the feed stood before the
        epochs were read, so the node's first NodeWatch parks at once instead of being
        answered "another generation" to learn it. Once per move: the follow write is
        idempotent and the epochs are a read, so a retry simply runs again. Taken on the
        event loop, which gathers the moves waiting into one call of the store thread
        (:meth:`drc.server.exports.ServerNodeVerbs.node_moved`)."""
        return self._declared()

    @method("suu", "(sbua(uu))", on_loop=True, timed=False)
    async def node_watch(
        self, peer: PeerCredentials, generation: str, since: int, timeout: int
    ) -> tuple[str, bool, int, list[tuple[int, int]]]:
        """Long poll for revocations and frees; answered within ``timeout`` seconds (the
        node's heartbeat), empty when nothing changed."""
        return self._declared()

    @method("ss", "", mutating=True, grouped=True)
    def node_follow(self, peer: PeerCredentials, node: str, server: str) -> None:
        return self._declared()

    @method("", "a{sv}", on_loop=True)
    def server_info(self, peer: PeerCredentials) -> dict[str, Any]:
        return self._declared()

    @method("s", "(a(uu)a(uu))")
    def node_slingshot_state(
        self, peer: PeerCredentials, node: str
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        return self._declared()

    @method("sau", "au", mutating=True)
    def node_slingshot_cleaned(
        self, peer: PeerCredentials, node: str, credentials: list[int]
    ) -> list[int]:
        return self._declared()
