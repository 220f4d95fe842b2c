"""The DRC link exporter: DRCS's node verbs (:class:`drc.server.exports.ServerNodeVerbs`),
served to node daemons over TCP.

Only the node verbs are reachable this way; every request is a MUNGE credential, so the peer's
uid comes from munged, and ``node_uids`` decides who is a node daemon. Everything between the
frame and the answer is :class:`drc.dispatch.Dispatcher`'s, as on the bus: argument and
answer checks, group commit, the error mapping, the refusal audit, metrics.

A request with a ``rid`` (see :mod:`drc.link.protocol`) is exactly-once: the link server hands
the ``rid`` to :func:`link_server`'s handler, the dispatcher's ``recorded`` hook makes it a
:class:`~drc.core.ports.Request`, and the verb's :class:`~drc.core.ports.Unit` carries that to
the store, which records it in the transaction of the change; a retry is answered from that
record (:func:`replay`, with the answer each verb declares as its ``replay`` trait).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any

from drc.address import split_host_port
from drc.core.errors import Code, DrcError
from drc.core.ports import Request
from drc.dispatch import Audit, Dispatcher, Then
from drc.export import CREDENTIAL, ExportedMethod, PeerCredentials, exported, verbs
from drc.link import LinkPeer, LinkServer, Munge
from drc.link.protocol import CONNECT_BATCH, Continued, Shared
from drc.link.server import Later, Reply
from drc.nodeverbs import NodeVerbs
from drc.server.group import GroupCommit
from drc.store import requests
from drc.wire import credential_to_wire

log = logging.getLogger("drc.server.link")

__all__ = ["GROUPED", "link_server", "replay"]


#: Node verbs that may share one transaction (declared ``grouped``; see drc.dispatch).
GROUPED = verbs(NodeVerbs, where=lambda m: m.grouped)
#: Node verbs that never touch the store: they run on the event loop.
ON_LOOP = verbs(NodeVerbs, where=lambda m: m.on_loop)
#: The connect that parks the node's first long poll, and that poll's verb.
CONNECT_FEED = exported(NodeVerbs.node_connect_feed).name
WATCH = exported(NodeVerbs.node_watch).name


def link_server(
    nodes: object,
    listen: str,
    *,
    munge_socket: str | None,
    node_uids: set[int],
    observer: Callable[[str, str, float, BaseException | None], None] | None = None,
    group: GroupCommit | None = None,
    audit: Audit | None = None,
    frees_may_share: bool = False,
) -> LinkServer:
    """Serve ``nodes`` (the node verbs object) on ``listen``; ``observer`` and ``audit`` are
    told of calls as the bus exporter's are.

    drcs passes its D-Bus verbs' ``group``: verbs arriving together on either transport then
    share one commit, not one each, by the same policy (``frees_may_share``: see
    :func:`drc.dispatch.shares_commit`). Without one, the link makes its own. Every
    exactly-once verb (``replay``) must take the unit that carries its request to the store:
    one that does not is refused here, not left to run twice when retried."""
    unrecorded = verbs(nodes, where=lambda m: m.replay is not None and not m.takes_unit)
    if unrecorded:  # their request ids would never be recorded: retries would run again
        raise TypeError(
            f"exactly-once verbs {', '.join(sorted(unrecorded))} must take the keyword-only "
            "unit and hand it to the core"
        )
    store = getattr(getattr(nodes, "service", None), "store", None)
    if group is None and hasattr(store, "batch"):
        group = GroupCommit(store)

    def recorded(
        rid: str, exported: ExportedMethod, args: list[Any], run: Callable[[Request], Any]
    ) -> Any:
        """``run(record)``: the verb hands the record to its write transaction, which
        records it; a retry of a committed request is answered from the record."""
        name = exported.name
        try:
            return run(Request(rid, name, requests.digest(name, args)))
        except requests.Replayed as done:
            return replay(nodes, done, exported, args)

    dispatcher = Dispatcher(
        nodes,
        transport="link",
        group=group,
        audit=audit,
        observer=observer,
        recorded=recorded,
        frees_may_share=frees_may_share,
    )

    def handle(
        peer: LinkPeer, name: str, args: list[Any], rid: str | None, then: Then
    ) -> Reply | Later:
        """Frame to dispatch: the peer as the link authenticated it, the request's id; a verb
        that waits is answered through ``then``, with no future of its own."""
        who = _peer_credentials(peer.uid, peer.gid, peer.address)
        if name == CONNECT_FEED:
            return connect_feed(who, args, rid)
        out = dispatcher.dispatch(who, name, args, rid, then=then)
        return Later(out) if isinstance(out, asyncio.Future) else out

    batch: _ConnectBatch | None = None  # the last batch of connect answers (maybe sent)

    def connect_feed(who: PeerCredentials, args: list[Any], rid: str | None) -> Reply:
        """NodeConnectFeed: its answer, sealed in a batch with the others answered meanwhile,
        continued by the node's first long poll parked from the position answered
        (:mod:`drc.link.protocol`, batched answers and continued requests)."""
        answered: asyncio.Future[Continued] = asyncio.get_running_loop().create_future()

        def then(out: list[Any] | None, error: DrcError | None) -> None:
            nonlocal batch
            if answered.done():  # the node went meanwhile
                return
            if error is not None:
                answered.set_exception(error)
                return
            assert out is not None
            rebooted, generation, seq = out[0]
            timeout = args[3]  # checked with the others by the dispatch
            if not generation:  # replayed from its record: no position, nothing parked
                answered.set_result(Continued(out, WATCH, None))
                return

            def watch() -> Reply:
                return dispatcher.dispatch(who, WATCH, [generation, seq, timeout])

            if rid is None:
                shared = None
            else:
                if batch is None or not batch.open():
                    batch = _ConnectBatch()
                batch.entries += (rid, rebooted, generation, seq)
                shared = batch.seal
            answered.set_result(Continued(out, WATCH, watch, shared))

        out = dispatcher.dispatch(who, CONNECT_FEED, args, rid, then=then)
        if not isinstance(out, asyncio.Future):  # answered at once (no group commit)
            then(out, None)
        return answered

    host, port = split_host_port(listen, "[link] listen", any_port=True)
    server = LinkServer(
        handle,
        host=host,
        port=port,
        munge=Munge(munge_socket or None),
        allowed_uids=node_uids,
        answers_later=True,
    )
    server.dispatcher = dispatcher  # type: ignore[attr-defined]
    return server


@functools.lru_cache(maxsize=32768)
def _peer_credentials(uid: int, gid: int, address: str) -> PeerCredentials:
    """A link peer as the dispatcher sees it: made once per connection's sender, not per
    request (immutable, so every request of the connection shares it)."""
    return PeerCredentials(uid=uid, gids=frozenset({gid}), pid=0, sender=f"link:{address}")


class _ConnectBatch:
    """NodeConnectFeed answers sealed together (:mod:`drc.link.protocol`, batched answers):
    open to more until the first of them is sent, or it holds :data:`CONNECT_BATCH`."""

    __slots__ = ("entries", "shared")

    def __init__(self) -> None:
        self.entries: list[Any] = []  # rid, rebooted, generation, seq, rid, …
        self.shared: Shared | None = None

    def open(self) -> bool:
        return self.shared is None and len(self.entries) < 4 * CONNECT_BATCH

    def seal(self) -> Shared:
        """The batch's one answer; it takes no more from now."""
        if self.shared is None:
            self.shared = Shared(self.entries, [])
        return self.shared


def replay(
    nodes: object, done: requests.Replayed, exported: ExportedMethod, args: list[Any]
) -> Any:
    """The answer to a request already committed under the same ``rid`` (as the verb returns
    it): what the verb declares as its ``replay`` trait."""
    name = exported.name
    if not done.same:
        raise DrcError(
            Code.EINVAL,
            f"request id {done.rid} was already used for another request ({done.method}); "
            "a node daemon must never reuse one",
        )
    log.info("%s %s: already committed, answering the retry without running it", name, done.rid)
    if exported.replay == CREDENTIAL:
        at = exported.credential_index  # an argument names it, or the first run made it
        credential = done.credential if at is None else args[at]
        service = nodes.service  # type: ignore[attr-defined]
        cred = service.credential(credential)
        if cred is None:
            raise DrcError(
                Code.CRED_NOT_FOUND, f"credential {credential} was freed since the request"
            )
        return credential_to_wire(cred)
    answer = exported.replay or []  # the out args; no verb with a replay answers two
    return answer[0] if answer else None
