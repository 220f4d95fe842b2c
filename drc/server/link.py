"""The DRC link exporter: DRCS's node verbs (:class:`drc.server.exports.ServerNodeVerbs`),
served to node daemons over TCP.

Only the node verbs are reachable this way; every frame is a MUNGE credential, so the peer's
uid comes from munged, and ``node_uids`` decides who is a node daemon. Arguments and answers
are held to the verbs' D-Bus signatures (:func:`drc.export.check_args`, ``check_result``),
as the bus holds them, so a verb behaves the same whichever transport carried it.

A request with a ``rid`` (see :mod:`drc.link.protocol`) is exactly-once: the store records it
in the transaction of its change, and a retry is answered from that record (:func:`replay`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from drc.core.errors import Code, DrcError
from drc.export import (
    ExportedMethod,
    PeerCredentials,
    check_args,
    check_result,
    exported,
    exported_methods,
    invoke,
    invoke_sync,
)
from drc.link import LinkPeer, LinkServer, Munge
from drc.link.server import REQUEST_ID, split_host_port
from drc.nodeverbs import NodeVerbs
from drc.server.group import GroupCommit
from drc.store import requests
from drc.wire import credential_to_wire

log = logging.getLogger("drc.server.link")

__all__ = ["GROUPED", "check_link_args", "link_server", "replay", "split_host_port"]


def check_link_args(name: str, in_signature: str, arg_names: tuple[str, ...], args: list) -> None:
    """:func:`drc.export.check_args` for a method given by its parts (older callers)."""
    check_args(ExportedMethod(name, in_signature, "", lambda: None, arg_names), args)


#: Node verbs that never free a credential: these may share one transaction (a verb that
#: frees runs external cleanups after its own commit, so it keeps a transaction of its own).
GROUPED = frozenset(
    exported(verb).name
    for verb in (
        NodeVerbs.node_access,
        NodeVerbs.node_acquire,
        NodeVerbs.node_grant,
        NodeVerbs.node_revoke,
        NodeVerbs.node_token,
        NodeVerbs.node_token_references,
        NodeVerbs.node_epochs,
        NodeVerbs.node_job_credential,
        NodeVerbs.node_processes,
    )
)


def link_server(
    nodes: object,
    listen: str,
    *,
    munge_socket: str | None,
    node_uids: set[int],
    observer: Callable[[str, str, float, BaseException | None], None] | None = None,
    group: GroupCommit | None = None,
) -> LinkServer:
    """Serve ``nodes`` (the node verbs object) on ``listen``; ``observer`` is told of every
    answered call, as :class:`drc.bus.BusExporter`'s.

    drcs passes its D-Bus verbs' ``group``: verbs arriving together on either transport then
    share one commit, not one each. Without one, the link makes its own."""
    methods = exported_methods(nodes)
    store = getattr(getattr(nodes, "service", None), "store", None)
    if group is None and hasattr(store, "batch"):
        group = GroupCommit(store)

    async def handle(peer: LinkPeer, name: str, args: list[Any]) -> list[Any]:
        exported = methods.get(name)
        if exported is None:
            raise DrcError(Code.EPROTO, f"the DRC link serves no method {name[:64]!r}")
        check_args(exported, args)
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

    async def _run(
        exported: ExportedMethod, who: PeerCredentials, name: str, args: list[Any]
    ) -> list[Any]:
        """Run one node verb, in a group commit when it may share one; a request id makes a
        retried verb answer what its first run did."""
        rid = REQUEST_ID.get()
        record = requests.RequestRecord(rid, name, requests.digest(name, args)) if rid else None
        if group is not None and name in GROUPED and not exported.is_coroutine:
            # The group runs the verb from its own callback, outside this task's context:
            # the request record travels with the call, not in the context variable.
            out = await group.run(
                lambda: _recorded(record, name, args, invoke_sync, nodes, exported, who)
            )
            return check_result(exported, out)
        if record is None:
            return check_result(exported, await invoke(nodes, exported, who, list(args)))
        token = requests.CURRENT.set(record)
        try:
            return check_result(exported, await invoke(nodes, exported, who, list(args)))
        except requests.Replayed as done:
            return replay(nodes, done, name, args)
        finally:
            requests.CURRENT.reset(token)

    host, port = split_host_port(listen, "[link] listen")
    return LinkServer(
        handle, host=host, port=port, munge=Munge(munge_socket or None), allowed_uids=node_uids
    )


def _recorded(
    record: requests.RequestRecord | None, name: str, args: list[Any], run: Any, *call: Any
) -> list[Any]:
    """``run(*call)`` with ``record`` as the request its first write transaction records."""
    token = requests.CURRENT.set(record)
    try:
        return run(*call, list(args))
    except requests.Replayed as done:
        return replay(call[0], done, name, args)
    finally:
        requests.CURRENT.reset(token)


#: What a retried request answers when its first run committed (results are not stored: the
#: store records the request and the credential it created, in the change's transaction).
_REPLAY_DEFAULTS: dict[str, list[Any]] = {
    exported(verb).name: answer
    for verb, answer in (
        (NodeVerbs.node_hello, [False]),
        (NodeVerbs.node_grant, []),
        (NodeVerbs.node_revoke, []),
        (NodeVerbs.node_release, [True]),
        (NodeVerbs.node_token_references, [[]]),
        (NodeVerbs.node_jobs_ended, [[]]),
        (NodeVerbs.node_jobs_ended_here, [[]]),
        (NodeVerbs.node_processes_exited, [[]]),
        (NodeVerbs.node_follow, []),
    )
}
#: Verbs whose retry answers the credential they created or accessed.
_NODE_ACQUIRE = exported(NodeVerbs.node_acquire).name
_ANSWER_CREDENTIAL = frozenset({_NODE_ACQUIRE, exported(NodeVerbs.node_access).name})


def replay(nodes: object, done: requests.Replayed, name: str, args: list[Any]) -> list[Any]:
    """The answer to a request already committed under the same ``rid``."""
    if not done.same:
        raise DrcError(
            Code.EINVAL,
            f"request id {done.rid} was already used for another request ({done.method}); "
            "a node daemon must never reuse one",
        )
    log.info("%s %s: already committed, answering the retry without running it", name, done.rid)
    if name in _ANSWER_CREDENTIAL:
        credential = done.credential if name == _NODE_ACQUIRE else args[1]
        service = nodes.service  # type: ignore[attr-defined]
        cred = service.credential(credential)
        if cred is None:
            raise DrcError(
                Code.CRED_NOT_FOUND, f"credential {credential} was freed since the request"
            )
        return [credential_to_wire(cred)]
    return list(_REPLAY_DEFAULTS.get(name, []))
