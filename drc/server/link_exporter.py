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

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from typing import Any

from drc.address import split_host_port
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
    out_list,
)
from drc.link import LinkPeer, LinkServer, Munge
from drc.link.server import REQUEST_ID, Reply
from drc.nodeverbs import NodeVerbs
from drc.server.group import GroupCommit
from drc.store import requests
from drc.wire import credential_to_wire

log = logging.getLogger("drc.server.link")

__all__ = ["GROUPED", "link_server", "replay"]


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


#: Node verbs that never touch the store: they run on the event loop (a parked long poll is
#: a future of the change log; who answers is known without the database). Every other verb
#: runs on the group's store thread, so a silent database never stops the loop.
ON_LOOP = frozenset(exported(verb).name for verb in (NodeVerbs.node_watch, NodeVerbs.server_info))


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

    def handle(peer: LinkPeer, name: str, args: list[Any]) -> Reply:
        """Run one node verb: in a group commit when it may share one (a future), at once when
        it is plain (its answer, or its future: a long poll), else in a task (a coroutine);
        a request id makes a retried verb answer what its first run did."""
        exported = methods.get(name)
        if exported is None:
            raise DrcError(Code.EPROTO, f"the DRC link serves no method {name[:64]!r}")
        check_args(exported, args)
        who = PeerCredentials(
            uid=peer.uid, gids=frozenset({peer.gid}), pid=0, sender=f"link:{peer.address}"
        )
        rid = REQUEST_ID.get()
        record = requests.RequestRecord(rid, name, requests.digest(name, args)) if rid else None
        if group is not None and name not in ON_LOOP and not exported.is_coroutine:
            # The group runs the verb on its store thread, outside this request's context:
            # the request record travels with the call, not in the context variable. Verbs
            # that may free (external cleanups after their commit) run in their own
            # transaction, in their turn.
            run = group.submit if name in GROUPED else group.alone
            return run(
                lambda: check_result(
                    exported, _recorded(record, name, args, invoke_sync, nodes, exported, who)
                )
            )
        if record is None and not exported.is_coroutine:
            return _plain(nodes, exported, who, args)
        return _run(exported, who, record, name, args)

    async def _run(
        exported: ExportedMethod,
        who: PeerCredentials,
        record: requests.RequestRecord | None,
        name: str,
        args: list[Any],
    ) -> list[Any]:
        token = requests.CURRENT.set(record)
        try:
            return check_result(exported, await invoke(nodes, exported, who, list(args)))
        except requests.Replayed as done:
            return replay(nodes, done, name, args)
        finally:
            requests.CURRENT.reset(token)

    host, port = split_host_port(listen, "[link] listen", any_port=True)
    return LinkServer(
        handle,
        host=host,
        port=port,
        munge=Munge(munge_socket or None),
        allowed_uids=node_uids,
        observer=None if observer is None else functools.partial(observer, "link"),
    )


def _plain(nodes: object, exported: ExportedMethod, who: PeerCredentials, args: list[Any]) -> Reply:
    """A plain verb's answer now, or the future of it when the verb hands back a future
    (NodeWatch parks one per following node). Failures travel as failed futures, so the
    observer counts them as the verb's."""
    loop = asyncio.get_running_loop()
    try:
        result = exported.func(nodes, who, *args)
        if not isinstance(result, asyncio.Future):
            return check_result(exported, out_list(exported, result))
    except Exception as exc:
        failed: asyncio.Future[list[Any]] = loop.create_future()
        failed.set_exception(exc)
        return failed
    return _Checked(exported, result, loop).answer


class _Checked:
    """The checked answer to a verb's future, which it cancels if the answer is cancelled
    (the node went: its parked poll goes too). One small object per parked poll; its
    callbacks need no context of their own."""

    __slots__ = ("answer", "exported", "verb")
    _context = contextvars.Context()

    def __init__(
        self, exported: ExportedMethod, verb: asyncio.Future[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.exported = exported
        self.verb = verb
        self.answer: asyncio.Future[list[Any]] = loop.create_future()
        verb.add_done_callback(self.settle, context=self._context)
        self.answer.add_done_callback(self.cancelled, context=self._context)

    def settle(self, verb: asyncio.Future[Any]) -> None:
        answer = self.answer
        if answer.done():
            return
        if verb.cancelled():
            answer.cancel()
            return
        try:
            error = verb.exception()
            if error is None:
                answer.set_result(
                    check_result(self.exported, out_list(self.exported, verb.result()))
                )
            else:
                answer.set_exception(error)
        except Exception as exc:
            answer.set_exception(exc)

    def cancelled(self, answer: asyncio.Future[list[Any]]) -> None:
        if answer.cancelled():
            self.verb.cancel()


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
