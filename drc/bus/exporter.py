"""The D-Bus exporter: puts service objects' ``@method`` tables on a bus name.

The caller's identity always comes from the bus driver (``GetConnectionCredentials``: the uid,
groups and pid the kernel reported for the connection), never from method arguments. It is
cached per unique bus name and dropped when that name loses its owner; unique names are never
reused while a bus runs, so a cache entry cannot be inherited by another process.

The pid is bound to the process that connected (:func:`drc.procfs.connecting_process`): by
the bus's ``ProcessFD`` (a pidfd, kept open while the name lives) where the bus sends one, else
by when the name appeared (``NameOwnerChanged`` with no old owner, CLOCK_BOOTTIME; names older
than this exporter's subscription count as appeared at the subscription).

dbus-fast private API still used, and why (no public equivalent serves):
- ``MessageBus._call(msg, callback)``: the credential lookup must store its answer in the
  reply callback itself, before dbus-fast handles the next message (maybe that sender's
  NameOwnerChanged); the public ``await bus.call()`` resumes a task too late.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from dbus_fast import BusType, Message, MessageFlag, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from drc.bus.connection import (
    DBUS_NAME,
    DBUS_PATH,
    default_bus_address,
    machine_id,
    watch_disconnect,
)
from drc.bus.values import body_converter, unwrap
from drc.core.errors import Code, DrcError
from drc.dispatch import Dispatcher
from drc.export import ExportedMethod, PeerCredentials, parse_signature
from drc.procfs import PidFd, connection_seen_at

log = logging.getLogger("drc.bus")

INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PEER = "org.freedesktop.DBus.Peer"
ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"

_NAME_RULE = (
    "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
    "interface='org.freedesktop.DBus',member='NameOwnerChanged',{}=''"
)
_NAME_LOST_RULE = _NAME_RULE.format("arg2")
_NAME_NEW_RULE = _NAME_RULE.format("arg1")

_INTROSPECT_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


def _to_bus_driver(member: str, name: str) -> Message:
    """A call of the bus driver's ``member`` taking one string (a match rule, a unique name)."""
    return Message(
        destination=DBUS_NAME,
        path=DBUS_PATH,
        interface=DBUS_NAME,
        member=member,
        signature="s",
        body=[name],
    )


class BusExporter:
    """Serves service objects' ``@method`` tables on one bus name / object path / interface.

    ``service`` comes first (its optional ``refused`` hook audits every refusal); ``also``
    are more objects on the same interface (DRCS: the node verbs). Messages come through a
    low-level handler because dbus-fast's ServiceInterface never tells a method who sent the
    call; what happens to a call is :class:`drc.dispatch.Dispatcher`'s, as on the DRC link.
    """

    def __init__(
        self,
        service: object,
        *also: object,
        bus_name: str,
        object_path: str,
        interface: str,
        observer: Callable[[str, str, float, BaseException | None], None] | None = None,
    ):
        self.service = service
        # Told of every answered call: (transport, method, seconds, error or None). Metrics.
        self.observer = observer
        self.bus_name = bus_name
        self.object_path = object_path
        self.interface = interface
        # Checks, invocation, the error mapping, the refusal audit (``service``'s optional
        # ``refused``) and metrics: the one dispatch path every transport shares.
        self.dispatcher = Dispatcher(
            service,
            *also,
            transport="dbus",
            audit=getattr(service, "refused", None),
            observer=observer,
        )
        self.methods: Mapping[str, ExportedMethod] = self.dispatcher.methods
        # Per remote name: its out-args converter to D-Bus values, built once.
        self._to_dbus = {name: body_converter(m.out_signature) for name, m in self.methods.items()}
        self.address: str | None = None
        self.credential_lookups = 0  # GetConnectionCredentials round trips, for tests and stats
        self._bus: MessageBus | None = None
        self._peers: dict[str, PeerCredentials] = {}
        # When each unique name appeared (CLOCK_BOOTTIME), and when we began to hear of it.
        self._appeared: dict[str, float] = {}
        self._subscribed = 0.0
        self._told_binding = False  # the log said once how callers are bound to processes
        self._pending: dict[str, list[tuple[Message, ExportedMethod]]] = {}
        self._xml = self._build_introspection()

    @property
    def peer_cache(self) -> Mapping[str, PeerCredentials]:
        """Read-only view of the credential cache (unique name → credentials)."""
        return MappingProxyType(self._peers)

    @property
    def unique_name(self) -> str | None:
        return self._bus.unique_name if self._bus else None

    async def start(self, address: str | None = None) -> None:
        """Connect, subscribe to name losses, then take the bus name (DO_NOT_QUEUE).

        Raises RuntimeError if the name is taken or the bus policy refuses it: a second daemon
        must not silently wait in a queue behind the first.
        """
        self.address = address or default_bus_address()
        try:
            # Unix fds: newer buses send the caller's pidfd (ProcessFD) only to peers that take fds.
            bus = await MessageBus(
                bus_address=self.address, bus_type=BusType.SYSTEM, negotiate_unix_fd=True
            ).connect()
        except Exception as exc:
            raise RuntimeError(f"cannot connect to the D-Bus bus at {self.address}: {exc}") from exc
        self._bus = bus
        watch_disconnect(bus)
        try:
            bus.add_message_handler(self._on_message)
            for rule in (_NAME_LOST_RULE, _NAME_NEW_RULE):
                reply = await bus.call(_to_bus_driver("AddMatch", rule))
                if reply.message_type is MessageType.ERROR:
                    raise RuntimeError(f"AddMatch refused by the bus: {reply.body}")
            self._subscribed = connection_seen_at()
            try:
                result = await bus.request_name(self.bus_name, NameFlag.DO_NOT_QUEUE)
            except DBusError as exc:
                raise RuntimeError(
                    f"not allowed to own {self.bus_name} on {self.address}: {exc.text}"
                ) from exc
            if result not in (RequestNameReply.PRIMARY_OWNER, RequestNameReply.ALREADY_OWNER):
                raise RuntimeError(
                    f"cannot own {self.bus_name} on {self.address}: another process owns it "
                    f"({result.name}); is the daemon already running?"
                )
        except BaseException:
            bus.disconnect()
            self._bus = None
            raise
        log.info("serving %s on %s as %s", self.bus_name, self.address, bus.unique_name)

    async def stop(self) -> None:
        """Disconnect (the bus releases the name) and drop all cached credentials."""
        bus, self._bus = self._bus, None
        if bus is not None:
            bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.wait_for_disconnect(), 5)
        self.dispatcher.cancel()
        for peer in self._peers.values():
            _close(peer)
        self._peers.clear()
        self._appeared.clear()
        self._pending.clear()

    async def wait_for_disconnect(self) -> None:
        """Return when the bus connection is gone (e.g. dbus-daemon stopped)."""
        if self._bus is not None:
            with contextlib.suppress(Exception):
                await self._bus.wait_for_disconnect()

    def introspection_xml(self) -> str:
        return self._xml

    def _build_introspection(self) -> str:
        node = ET.Element("node", name=self.object_path)
        iface = ET.SubElement(node, "interface", name=self.interface)
        for name in sorted(self.methods):
            exported = self.methods[name]
            m = ET.SubElement(iface, "method", name=name)
            in_types = parse_signature(exported.in_signature)
            for arg, type_ in zip(exported.arg_names, in_types, strict=True):
                ET.SubElement(m, "arg", name=arg, type=type_.signature, direction="in")
            for type_ in parse_signature(exported.out_signature):
                ET.SubElement(m, "arg", type=type_.signature, direction="out")
        intro = ET.SubElement(node, "interface", name=INTROSPECTABLE)
        m = ET.SubElement(intro, "method", name="Introspect")
        ET.SubElement(m, "arg", name="xml_data", type="s", direction="out")
        peer = ET.SubElement(node, "interface", name=PEER)
        ET.SubElement(peer, "method", name="Ping")
        m = ET.SubElement(peer, "method", name="GetMachineId")
        ET.SubElement(m, "arg", name="machine_uuid", type="s", direction="out")
        ET.indent(node)
        return _INTROSPECT_DOCTYPE + ET.tostring(node, encoding="unicode") + "\n"

    # dbus-fast calls this for every incoming message; returning a Message sends it, True
    # means "handled", None lets dbus-fast go on (it answers Peer.Ping/GetMachineId itself).
    def _on_message(self, msg: Message) -> Message | bool | None:
        mtype = msg.message_type
        if msg.unix_fds and mtype in (MessageType.SIGNAL, MessageType.METHOD_CALL):
            # No verb takes a descriptor: close what a caller attached, or it would stay open
            # here for good (a caller could exhaust the daemon's descriptors).
            _close_fds(msg.unix_fds)
        if mtype is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == DBUS_NAME:
                name, old, new = msg.body
                if name.startswith(":"):
                    if not new:
                        _close(self._peers.pop(name, None))
                        self._appeared.pop(name, None)
                    elif not old:
                        self._appeared[name] = connection_seen_at()
            return None
        if mtype is not MessageType.METHOD_CALL or msg.path != self.object_path:
            return None
        interface = msg.interface
        if interface == self.interface or (interface is None and msg.member in self.methods):
            exported = self.methods.get(msg.member)
            if exported is None:
                return _error(
                    msg,
                    ERROR_UNKNOWN_METHOD,
                    f"{self.interface} has no method {msg.member!r}",
                )
            peer = self._peers.get(msg.sender)
            if peer is not None:
                return self._dispatch(msg, exported, peer)
            self._lookup_then_dispatch(msg, exported)
            return True
        if interface == INTROSPECTABLE and msg.member == "Introspect" and msg.signature == "":
            return Message.new_method_return(msg, "s", [self._xml])
        if interface == PEER and msg.member == "GetMachineId" and msg.signature == "":
            # dbus-fast would forward this to the bus driver, which the system policy refuses.
            this_machine = machine_id()
            if this_machine is None:
                return _error(msg, "org.freedesktop.DBus.Error.Failed", "no machine id")
            return Message.new_method_return(msg, "s", [this_machine])
        return None  # Peer.Ping: dbus-fast answers it itself

    def _lookup_then_dispatch(self, msg: Message, exported: ExportedMethod) -> None:
        sender = msg.sender
        waiting = self._pending.get(sender)
        if waiting is not None:
            waiting.append((msg, exported))
            return
        self._pending[sender] = [(msg, exported)]
        self.credential_lookups += 1
        assert self._bus is not None
        # The low-level callback API on purpose: the entry must be stored in the reply callback
        # itself, before dbus-fast processes the next message (maybe that sender's
        # NameOwnerChanged); an awaited future would resume too late.
        self._bus._call(
            _to_bus_driver("GetConnectionCredentials", sender),
            functools.partial(self._on_credentials, sender),
        )

    def _on_credentials(self, sender: str, reply: Message | None, err: Exception | None) -> None:
        waiting = self._pending.pop(sender, [])
        bus = self._bus
        fds = list(reply.unix_fds) if reply is not None else []
        if bus is None:
            _close_fds(fds)
            return
        peer: PeerCredentials | None = None
        problem = ""
        if err is not None or reply is None:
            problem = f"bus error: {err}"
        elif reply.message_type is MessageType.ERROR:
            problem = f"{reply.error_name}: {reply.body[0] if reply.body else ''}"
        else:
            since = self._appeared.get(sender, self._subscribed)
            peer = peer_credentials(sender, reply.body[0], fds, since)
            if peer is None:
                problem = "the bus reports no uid for this connection (anonymous TCP bus?)"
            else:
                self._peers[sender] = peer
                self._tell_binding(peer)
        _close_fds(fds)  # those peer_credentials did not take
        for msg, exported in waiting:
            if peer is None:
                log.warning("cannot identify caller %s of %s: %s", sender, exported.name, problem)
                out: Message | bool = _error(
                    msg, Code.EPERM.dbus_name, f"cannot identify the caller: {problem}"
                )
            else:
                out = self._dispatch(msg, exported, peer)
            if isinstance(out, Message):
                bus.send(out)

    def _tell_binding(self, peer: PeerCredentials) -> None:
        if self._told_binding:
            return
        self._told_binding = True
        if peer.process is not None:
            log.info("the bus sends ProcessFD: each caller is bound to its process by a pidfd")
        else:
            log.info(
                "the bus sends no ProcessFD (dbus-daemon < 1.15.8, dbus-broker < 35): callers "
                "are bound to their process by uid and start time (see SECURITY.md)"
            )

    def _dispatch(
        self, msg: Message, exported: ExportedMethod, peer: PeerCredentials
    ) -> Message | bool:
        """Frame to dispatch and back: the message's declared signature is the bus's framing
        (EPROTO when it is not the method's); the rest is :class:`drc.dispatch.Dispatcher`'s."""
        if msg.signature != exported.in_signature:
            return _error(
                msg,
                Code.EPROTO.dbus_name,
                f"Method {exported.name} expects signature {exported.in_signature!r}, "
                f"got {msg.signature!r}",
            )
        try:
            out = self.dispatcher.dispatch(
                peer,
                exported.name,
                _args(msg, exported),
                then=functools.partial(self._answer_later, msg, exported),
            )
        except DrcError as exc:
            return self._failure(msg, exc)
        if isinstance(out, asyncio.Future):
            # A verb waiting (for its group commit, or for DRCS): answered through ``then``
            # as its future is set (drc.dispatch), no task and no extra loop turn per call.
            return True
        return self._reply(msg, exported, out)

    def _answer_later(
        self, msg: Message, exported: ExportedMethod, out: list[Any] | None, error: Any
    ) -> None:
        if self._bus is None:
            return  # the exporter stopped: nobody to answer
        if error is None:
            reply = self._reply(msg, exported, out or [])
        else:
            reply = self._failure(msg, error)
        if isinstance(reply, Message):
            self._bus.send(reply)

    def _reply(self, msg: Message, exported: ExportedMethod, out: list[Any]) -> Message | bool:
        body = self._to_dbus[exported.name](out)
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return Message.new_method_return(msg, exported.out_signature, body)

    def _failure(self, msg: Message, exc: DrcError) -> Message | bool:
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return _error(msg, exc.code.dbus_name, exc.message)


def peer_credentials(
    sender: str, creds: dict[str, Any], fds: list[int], since: float
) -> PeerCredentials | None:
    """``GetConnectionCredentials``'s answer as :class:`PeerCredentials` (None: no uid).

    A ``ProcessFD`` (an index into the reply's ``fds``) is taken out of ``fds``: the pidfd then
    belongs to the answer, the caller closes what is left.
    """
    uid = creds.get("UnixUserID")
    if uid is None:
        return None
    gids = creds.get("UnixGroupIDs")
    pid = creds.get("ProcessID")
    pidfd = creds.get("ProcessFD")
    process = None
    if pidfd is not None and 0 <= pidfd.value < len(fds) and fds[pidfd.value] >= 0:
        process = PidFd(fds[pidfd.value])
        fds[pidfd.value] = -1
    return PeerCredentials(
        uid=uid.value,
        gids=frozenset(gids.value) if gids is not None else frozenset(),
        pid=pid.value if pid is not None else 0,
        sender=sender,
        process=process,
        since=since,
    )


def _close(peer: PeerCredentials | None) -> None:
    if peer is not None and peer.process is not None:
        peer.process.close()


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def _args(msg: Message, exported: ExportedMethod) -> list[Any]:
    """In args as plain Python: service objects never see a Variant."""
    return unwrap(msg.body) if "v" in exported.in_signature else msg.body


def _error(msg: Message, name: str, text: str) -> Message:
    return Message.new_error(msg, name, text)
