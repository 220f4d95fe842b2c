"""Node verbs of the Slingshot provider: what a DRCC's CXI service manager asks DRCS.

Mixed into :class:`drc.server.exports.ServerNodeVerbs` (so the DRC link serves them,
MUNGE-signed both ways, to node daemons only); names and signatures are declared in
:class:`drc.nodeverbs.NodeVerbs`. Harmless with other providers: nothing is ever owed.
"""

from __future__ import annotations

from collections.abc import Callable

from drc.core.errors import einval
from drc.core.ports import Unit
from drc.core.service import CredentialService
from drc.export import PeerCredentials
from drc.wire import node_name

MAX_CONFIRM = 10_000


class SlingshotNodeVerbs:
    service: CredentialService
    #: ServerNodeVerbs's check: only a root node daemon may call node verbs.
    _node: Callable[[PeerCredentials], None]

    def node_slingshot_state(
        self, peer: PeerCredentials, node: str
    ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(live, owed) (credential, VNI) pairs of ``node``: a DRCC keeps the services of the
        live ones, destroys every other service in drc's range and confirms the owed ones."""
        self._node(peer)
        node = node_name(node)
        return self.service.node_objects_state(node)

    def node_slingshot_cleaned(
        self, peer: PeerCredentials, node: str, credentials: list[int], *, unit: Unit | None = None
    ) -> list[int]:
        """``node`` destroyed every CXI service of these freed credentials; those confirmed.
        A confirmed VNI returns to the pool once no node owes it and its quarantine passed."""
        self._node(peer)
        node = node_name(node)
        if len(credentials) > MAX_CONFIRM:
            raise einval(f"at most {MAX_CONFIRM} credentials per confirmation")
        return self.service.node_objects_removed(node, credentials, unit)
