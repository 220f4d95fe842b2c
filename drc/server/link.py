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

from dbus_fast.signature import SignatureType, get_signature_tree

from drc.bus import PeerCredentials, exported_methods, invoke, invoke_sync
from drc.core.errors import Code, DrcError
from drc.link import LinkPeer, LinkServer, Munge
from drc.link.server import REQUEST_ID
from drc.server.exports import NODE, credential_dict
from drc.server.group import GroupCommit
from drc.store import requests

log = logging.getLogger("drc.server.link")


def split_host_port(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{what} must be host:port, got {value!r}")
    return host.strip("[]"), int(port)


_INT_RANGES = {
    "y": (0, 0xFF),
    "n": (-(2**15), 2**15 - 1),
    "q": (0, 2**16 - 1),
    "i": (-(2**31), 2**31 - 1),
    "u": (0, 2**32 - 1),
    "x": (-(2**63), 2**63 - 1),
    "t": (0, 2**64 - 1),
    "h": (0, 2**32 - 1),
}


def _conforms(value: Any, t: SignatureType) -> bool:
    """Whether a JSON value is what D-Bus type ``t`` would carry (``v`` takes anything)."""
    token = t.token
    if token in _INT_RANGES:
        low, high = _INT_RANGES[token]
        return type(value) is int and low <= value <= high
    if token == "b":
        return type(value) is bool
    if token == "d":
        return type(value) in (int, float)
    if token in "sog":
        return type(value) is str
    if token == "v":
        return True
    if token == "(":
        return (
            isinstance(value, list)
            and len(value) == len(t.children)
            and all(_conforms(v, c) for v, c in zip(value, t.children, strict=True))
        )
    if token == "a":
        (child,) = t.children
        if child.token == "{":
            key, val = child.children
            return isinstance(value, dict) and all(
                _conforms(k, key) and _conforms(v, val) for k, v in value.items()
            )
        return isinstance(value, list) and all(_conforms(v, child) for v in value)
    return False


def check_link_args(name: str, in_signature: str, arg_names: tuple[str, ...], args: list) -> None:
    """Refuse arguments the D-Bus signature would not carry, with the argument's name.

    Over D-Bus the bus library checks types before a method runs; JSON frames carry any
    type, so the link checks the same signature here, and a method never sees (and never
    crashes on) a None where it expects a list.
    """
    if len(args) != len(arg_names):
        raise DrcError(Code.EINVAL, f"{name} takes {len(arg_names)} arguments, got {len(args)}")
    for value, arg, t in zip(args, arg_names, get_signature_tree(in_signature).types, strict=True):
        if not _conforms(value, t):
            raise DrcError(
                Code.EINVAL, f"{name}: argument {arg!r} must be of D-Bus type {t.signature!r}"
            )


#: Node verbs that never free a credential: these may share one transaction (a verb that
#: frees runs external cleanups after its own commit, so it keeps a transaction of its own).
GROUPED = frozenset(
    {
        "NodeAccess",
        "NodeAcquire",
        "NodeGrant",
        "NodeRevoke",
        "NodeToken",
        "NodeTokenReferences",
        "NodeEpochs",
        "NodeProcesses",
    }
)


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
    store = getattr(getattr(exports, "service", None), "store", None)
    # drcs hands its D-Bus verbs' group (exports.group): verbs arriving together on either
    # transport share one commit, not one each.
    group = getattr(exports, "group", None)
    if group is None and hasattr(store, "batch"):
        group = GroupCommit(store)

    async def handle(peer: LinkPeer, name: str, args: list[Any]) -> list[Any]:
        exported = methods.get(name)
        if exported is None:
            raise DrcError(Code.EPROTO, f"the DRC link serves no method {name[:64]!r}")
        check_link_args(name, exported.in_signature, exported.arg_names, args)
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
        """Run one node verb, in a group commit when it may share one; a request id makes a
        retried verb answer what its first run did."""
        rid = REQUEST_ID.get()
        record = requests.RequestRecord(rid, name, requests.digest(name, args)) if rid else None
        if group is not None and name in GROUPED and not exported.is_coroutine:
            # The group runs the verb from its own callback, outside this task's context:
            # the request record travels with the call, not in the context variable.
            return await group.run(
                lambda: _recorded(record, name, args, invoke_sync, exports, exported, who)
            )
        if record is None:
            return await invoke(exports, exported, who, list(args))
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
