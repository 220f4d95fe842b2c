"""The DRC link exporter: the same ``ServerExports`` object, served to node daemons over TCP.

Only the node verbs (``hook=NODE``) are reachable this way; every frame is a MUNGE credential,
so the peer's uid comes from munged, and ``node_uids`` decides who is a node daemon.

A request with a ``rid`` (see :mod:`drc.link.protocol`) is exactly-once: the store records it
in the transaction of its change, and a retry is answered from that record (:func:`replay`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from drc.bus import PeerCredentials, exported_methods, invoke
from drc.core.errors import Code, DrcError
from drc.link import LinkPeer, LinkServer, Munge
from drc.link.server import REQUEST_ID
from drc.server.exports import NODE, credential_dict
from drc.store import requests

log = logging.getLogger("drc.server.link")


def split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{what} must be host:port, got {value!r}")
    return host.strip("[]"), int(port)


def link_server(
    exports: object,
    listen: str,
    *,
    munge_socket: str | None,
    node_uids: set[int],
    observer: Callable[[str, str, float, BaseException | None], None] | None = None,
) -> LinkServer:
    """``observer`` is told of every answered call, as :class:`drc.bus.BusExporter`'s."""
    methods = {name: m for name, m in exported_methods(exports).items() if m.hook == NODE}

    async def handle(peer: LinkPeer, name: str, args: list[Any]) -> list[Any]:
        exported = methods.get(name)
        if exported is None:
            raise DrcError(Code.EINVAL, f"the DRC link serves no method {name[:64]!r}")
        if len(args) != len(exported.arg_names):
            raise DrcError(
                Code.EINVAL, f"{name} takes {len(exported.arg_names)} arguments, got {len(args)}"
            )
        who = PeerCredentials(
            uid=peer.uid, gids=frozenset({peer.gid}), pid=0, sender=f"link:{peer.address}"
        )
        if observer is None:
            return await _run(exported, who, name, args)
        started = time.perf_counter()
        try:
            out = await _run(exported, who, name, args)
        except Exception as exc:
            observer("link", name, time.perf_counter() - started, exc)
            raise
        observer("link", name, time.perf_counter() - started, None)
        return out

    async def _run(exported: Any, who: PeerCredentials, name: str, args: list[Any]) -> list[Any]:
        """Run one node verb; a request id makes a retried one answer what its first run did."""
        rid = REQUEST_ID.get()
        if rid is None:
            return await invoke(exports, exported, who, list(args))
        record = requests.RequestRecord(rid, name, requests.digest(name, args))
        token = requests.CURRENT.set(record)
        try:
            return await invoke(exports, exported, who, list(args))
        except requests.Replayed as done:
            return replay(exports, done, name, args)
        finally:
            requests.CURRENT.reset(token)

    host, port = split_host_port(listen, "[link] listen")
    return LinkServer(
        handle, host=host, port=port, munge=Munge(munge_socket or None), allowed_uids=node_uids
    )


#: What a retried request answers when its first run committed (results are not stored: the
#: store records the request and the credential it created, in the change's transaction).
_REPLAY_DEFAULTS: dict[str, list[Any]] = {
    "NodeHello": [False],
    "NodeGrant": [],
    "NodeRevoke": [],
    "NodeRelease": [True],
    "NodeTokenReferences": [[]],
    "NodeJobsEnded": [[]],
    "NodeJobsEndedHere": [[]],
    "NodeProcessesExited": [[]],
    "NodeFollow": [],
}


def replay(exports: object, done: requests.Replayed, name: str, args: list[Any]) -> list[Any]:
    """The answer to a request already committed under the same ``rid``."""
    if not done.same:
        raise DrcError(
            Code.EINVAL,
            f"request id {done.rid} was already used for another request ({done.method}); "
            "a node daemon must never reuse one",
        )
    log.info("%s %s: already committed, answering the retry without running it", name, done.rid)
    if name in ("NodeAcquire", "NodeAccess"):
        credential = done.credential if name == "NodeAcquire" else args[1]
        service = exports.service  # type: ignore[attr-defined]
        with service.store.snapshot() as tx:
            cred = tx.get_credential(credential)
        if cred is None:
            raise DrcError(
                Code.CRED_NOT_FOUND, f"credential {credential} was freed since the request"
            )
        return [credential_dict(cred)]
    return list(_REPLAY_DEFAULTS.get(name, []))
