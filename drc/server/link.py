"""The DRC link exporter: the same ``ServerExports`` object, served to node daemons over TCP.

Only the node verbs (``hook=NODE``) are reachable this way; every frame is a MUNGE credential,
so the peer's uid comes from munged, and ``node_uids`` decides who is a node daemon.
"""

from __future__ import annotations

import logging
from typing import Any

from drc.bus import PeerCredentials, exported_methods, invoke
from drc.core.errors import Code, DrcError
from drc.link import LinkPeer, LinkServer, Munge
from drc.server.exports import NODE

log = logging.getLogger("drc.server.link")


def split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{what} must be host:port, got {value!r}")
    return host.strip("[]"), int(port)


def link_server(
    exports: object, listen: str, *, munge_socket: str | None, node_uids: set[int]
) -> LinkServer:
    methods = {name: m for name, m in exported_methods(exports).items() if m.hook == NODE}

    async def handle(peer: LinkPeer, name: str, args: list[Any]) -> list[Any]:
        exported = methods.get(name)
        if exported is None:
            raise DrcError(Code.EPROTO, f"the DRC link serves no method {name[:64]!r}")
        if len(args) != len(exported.arg_names):
            raise DrcError(
                Code.EPROTO, f"{name} takes {len(exported.arg_names)} arguments, got {len(args)}"
            )
        who = PeerCredentials(
            uid=peer.uid, gids=frozenset({peer.gid}), pid=0, sender=f"link:{peer.address}"
        )
        return await invoke(exports, exported, who, list(args))

    host, port = split_host_port(listen, "[link] listen")
    return LinkServer(
        handle, host=host, port=port, munge=Munge(munge_socket or None), allowed_uids=node_uids
    )
