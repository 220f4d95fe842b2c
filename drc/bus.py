"""D-Bus transport: the exporter that puts a service object on the bus, and the bus clients.

This is the only module that imports dbus_fast. Daemon logic marks its methods with
:func:`method` (as tuned's ``@exports.export``) and stays free of transport code;
:class:`BusExporter` serves them on a bus, and the DRC link serves the same table through
:func:`exported_methods` and :func:`invoke`.

The caller's identity always comes from the bus driver (``GetConnectionCredentials``: the uid,
groups and pid the kernel reported for the connection), never from method arguments. It is
cached per unique bus name and dropped when that name loses its owner; unique names are never
reused while a bus runs, so a cache entry cannot be inherited by another process.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from dbus_fast import BusType, Message, MessageFlag, MessageType, NameFlag, RequestNameReply
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError
from dbus_fast.signature import SignatureType, Variant, get_signature_tree

from drc.core.errors import Code, DrcError

log = logging.getLogger("drc.bus")

DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PEER = "org.freedesktop.DBus.Peer"
ERROR_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
# The callee is not there (or went away before answering): to a DRC client that is "the daemon
# is not running", whatever the bus calls it.
_NOT_RUNNING_ERRORS = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.DBus.Error.NoReply",
        "org.freedesktop.DBus.Error.Disconnected",
        "org.freedesktop.DBus.Error.Timeout",
        "org.freedesktop.DBus.Error.TimedOut",
    }
)
# The bus's own policy refused the call: a permission problem, not a bad parameter.
_ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"

_DAEMON_LABELS = {
    "org.drc.Server": "the DRC server (drcs)",
    "org.drc.Node": "the DRC node daemon (drcc)",
}
# What an admin starts when a daemon does not answer.
_DAEMON_UNITS = {"org.drc.Server": "drcs.service", "org.drc.Node": "drcc.service"}

_NAME_LOST_RULE = (
    "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
    "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg2=''"
)

_INTROSPECT_DOCTYPE = (
    '<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
    ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
)


# -- the method table --------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerCredentials:
    """Who called, as the kernel told the bus (or the DRC link's MUNGE credential)."""

    uid: int
    gids: frozenset[int]
    pid: int
    sender: str


@dataclass(frozen=True)
class ExportedMethod:
    """One ``@method`` of a service class: what every exporter needs to serve it."""

    name: str
    in_signature: str
    out_signature: str
    func: Callable[..., Any]
    arg_names: tuple[str, ...]
    hook: Any = None
    is_coroutine: bool = False
    out_count: int = 0
    # Built once at decoration time so a call does no signature parsing.
    _to_dbus: Callable[[list[Any]], list[Any]] = field(default=lambda v: v, repr=False)


F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__drc_method__"


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def method(
    in_signature: str, out_signature: str, *, name: str | None = None, hook: Any = None
) -> Callable[[F], F]:
    """Mark ``fn(self, peer, *args)`` as a remote method with these D-Bus signatures.

    The function is left unchanged (the core calls it directly in tests). ``hook`` is carried
    on :class:`ExportedMethod` untouched, for exporters and daemons that tag methods.
    """
    in_tree = get_signature_tree(in_signature)
    out_tree = get_signature_tree(out_signature)

    def mark(fn: F) -> F:
        params = list(inspect.signature(fn).parameters.values())
        if len(params) < 2:
            raise TypeError(f"@method {fn.__qualname__} must take (self, peer, ...)")
        arg_names = tuple(p.name for p in params[2:])
        if len(arg_names) != len(in_tree.types):
            raise TypeError(
                f"@method {fn.__qualname__}: in_signature {in_signature!r} has "
                f"{len(in_tree.types)} arguments, the function takes {len(arg_names)}"
            )
        exported = ExportedMethod(
            name=name or _camel(fn.__name__),
            in_signature=in_signature,
            out_signature=out_signature,
            func=fn,
            arg_names=arg_names,
            hook=hook,
            is_coroutine=inspect.iscoroutinefunction(fn),
            out_count=len(out_tree.types),
            _to_dbus=_body_converter(out_signature),
        )
        setattr(fn, _MARK, exported)
        return fn

    return mark


@functools.cache
def _class_methods(cls: type) -> Mapping[str, ExportedMethod]:
    table: dict[str, ExportedMethod] = {}
    for attr in dir(cls):
        exported = getattr(getattr(cls, attr, None), _MARK, None)
        if isinstance(exported, ExportedMethod):
            if exported.name in table:
                raise TypeError(f"{cls.__qualname__} exports two methods named {exported.name}")
            table[exported.name] = exported
    return MappingProxyType(table)


def exported_methods(service: object) -> Mapping[str, ExportedMethod]:
    """The ``@method`` table of a service object, keyed by remote method name."""
    return _class_methods(type(service))


def _out_list(exported: ExportedMethod, result: Any) -> list[Any]:
    if exported.out_count == 0:
        return []
    if exported.out_count == 1:
        return [result]
    if not isinstance(result, (tuple, list)) or len(result) != exported.out_count:
        raise TypeError(
            f"{exported.name} must return {exported.out_count} values "
            f"({exported.out_signature!r}), returned {result!r}"
        )
    return list(result)


def invoke_sync(
    service: object, exported: ExportedMethod, peer: PeerCredentials, args: list[Any]
) -> list[Any]:
    """Call a synchronous method; the out args as a list of plain Python values."""
    return _out_list(exported, exported.func(service, peer, *args))


async def invoke(
    service: object, exported: ExportedMethod, peer: PeerCredentials, args: list[Any]
) -> list[Any]:
    """Call a method (plain or coroutine function); the out args as a list of plain values.

    Exceptions propagate: exporters turn :class:`DrcError` into their error replies.
    """
    result = exported.func(service, peer, *args)
    if exported.is_coroutine or inspect.isawaitable(result):
        result = await result
    return _out_list(exported, result)


# -- plain Python <-> D-Bus values -------------------------------------------------------------


def variant(value: Any) -> Variant:
    """Wrap a plain value in a Variant: bool→b, int→x, float→d, str→s, bytes→ay,
    list[int]→ax, list[str]→as (also the empty list), list[dict]→aa{sv}, dict→a{sv}."""
    if isinstance(value, Variant):
        return value
    if isinstance(value, bool):
        return Variant("b", value)
    if isinstance(value, int):
        return Variant("x", value)
    if isinstance(value, float):
        return Variant("d", value)
    if isinstance(value, str):
        return Variant("s", value)
    if isinstance(value, (bytes, bytearray)):
        return Variant("ay", bytes(value))
    if isinstance(value, dict):
        return Variant("a{sv}", variant_dict(value))
    if isinstance(value, (list, tuple)):
        items = list(value)
        if all(isinstance(v, str) for v in items):
            return Variant("as", items)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in items):
            return Variant("ax", items)
        if all(isinstance(v, dict) for v in items):
            return Variant("aa{sv}", [variant_dict(v) for v in items])
        raise TypeError(f"cannot put a mixed list in a D-Bus variant: {value!r}")
    raise TypeError(f"cannot put {type(value).__name__} {value!r} in a D-Bus variant")


def variant_dict(d: Mapping[str, Any]) -> dict[str, Variant]:
    """An ``a{sv}`` value from a dict of plain values (see :func:`variant` for the types)."""
    return {str(k): variant(v) for k, v in d.items()}


def unwrap(value: Any) -> Any:
    """Variants (at any depth) back to plain Python values."""
    if isinstance(value, Variant):
        return unwrap(value.value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def _identity(value: Any) -> Any:
    return value


def _converter(type_: SignatureType) -> Callable[[Any], Any]:
    """Plain Python → what dbus-fast marshals, for one complete type (None: nothing to do)."""
    token = type_.token
    if token == "v":
        return variant
    if token == "(":
        children = [_converter(c) for c in type_.children]
        if all(c is _identity for c in children):
            return list
        return lambda v: [c(x) for c, x in zip(children, v, strict=True)]
    if token == "a":
        child = type_.children[0]
        if child.token == "{":
            key, val = (_converter(c) for c in child.children)
            if key is _identity and val is _identity:
                return _identity
            return lambda v: {key(k): val(x) for k, x in v.items()}
        if child.token == "y":
            return _identity
        item = _converter(child)
        if item is _identity:
            return lambda v: v if isinstance(v, list) else list(v)
        return lambda v: [item(x) for x in v]
    return _identity


def _body_converter(signature: str) -> Callable[[list[Any]], list[Any]]:
    tree = get_signature_tree(signature)
    converters = [_converter(t) for t in tree.types]
    if all(c is _identity for c in converters):

        def check(body: list[Any]) -> list[Any]:
            tree.verify(body)
            return body

        return check

    def convert(body: list[Any]) -> list[Any]:
        out = [c(v) for c, v in zip(converters, body, strict=True)]
        tree.verify(out)
        return out

    return convert


def to_dbus(signature: str, body: list[Any]) -> list[Any]:
    """Plain values (tuples for structs, plain dicts for ``a{sv}``) to a body of ``signature``.

    Raises TypeError/ValueError (dbus-fast's SignatureBodyMismatchError) when they don't fit.
    """
    return _cached_converter(signature)(body)


_cached_converter = functools.lru_cache(maxsize=256)(_body_converter)


def _reply_body(reply: Message) -> list[Any]:
    return unwrap(reply.body) if "v" in reply.signature else reply.body


# -- server side -------------------------------------------------------------------------------


class BusExporter:
    """Serves one service object's ``@method`` table on a bus name / object path / interface.

    Dispatch goes through a low-level message handler because dbus-fast's ServiceInterface
    never tells a method who sent the call.
    """

    def __init__(
        self,
        service: object,
        *,
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
        self.methods = exported_methods(service)
        self.address: str | None = None
        self.credential_lookups = 0  # GetConnectionCredentials round trips, for tests and stats
        self._bus: MessageBus | None = None
        self._peers: dict[str, PeerCredentials] = {}
        self._pending: dict[str, list[tuple[Message, ExportedMethod]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
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
            bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        except Exception as exc:
            raise RuntimeError(f"cannot connect to the D-Bus bus at {self.address}: {exc}") from exc
        self._bus = bus
        _watch_disconnect(bus)
        try:
            bus.add_message_handler(self._on_message)
            reply = await bus.call(
                Message(
                    destination=DBUS_NAME,
                    path=DBUS_PATH,
                    interface=DBUS_NAME,
                    member="AddMatch",
                    signature="s",
                    body=[_NAME_LOST_RULE],
                )
            )
            if reply.message_type is MessageType.ERROR:
                raise RuntimeError(f"AddMatch refused by the bus: {reply.body}")
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
        for task in list(self._tasks):
            task.cancel()
        self._peers.clear()
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
            in_types = get_signature_tree(exported.in_signature).types
            for arg, type_ in zip(exported.arg_names, in_types, strict=True):
                ET.SubElement(m, "arg", name=arg, type=type_.signature, direction="in")
            for type_ in get_signature_tree(exported.out_signature).types:
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
        if mtype is MessageType.SIGNAL:
            if msg.member == "NameOwnerChanged" and msg.sender == DBUS_NAME:
                name, _old, new = msg.body
                if not new and name.startswith(":"):
                    self._peers.pop(name, None)
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
            machine_id = _machine_id()
            if machine_id is None:
                return _error(msg, "org.freedesktop.DBus.Error.Failed", "no machine id")
            return Message.new_method_return(msg, "s", [machine_id])
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
            Message(
                destination=DBUS_NAME,
                path=DBUS_PATH,
                interface=DBUS_NAME,
                member="GetConnectionCredentials",
                signature="s",
                body=[sender],
            ),
            functools.partial(self._on_credentials, sender),
        )

    def _on_credentials(self, sender: str, reply: Message | None, err: Exception | None) -> None:
        waiting = self._pending.pop(sender, [])
        bus = self._bus
        if bus is None:
            return
        peer: PeerCredentials | None = None
        problem = ""
        if err is not None or reply is None:
            problem = f"bus error: {err}"
        elif reply.message_type is MessageType.ERROR:
            problem = f"{reply.error_name}: {reply.body[0] if reply.body else ''}"
        else:
            creds = reply.body[0]
            uid = creds.get("UnixUserID")
            if uid is None:
                problem = "the bus reports no uid for this connection (anonymous TCP bus?)"
            else:
                gids = creds.get("UnixGroupIDs")
                pid = creds.get("ProcessID")
                peer = PeerCredentials(
                    uid=uid.value,
                    gids=frozenset(gids.value) if gids is not None else frozenset(),
                    pid=pid.value if pid is not None else 0,
                    sender=sender,
                )
                self._peers[sender] = peer
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

    def _dispatch(
        self, msg: Message, exported: ExportedMethod, peer: PeerCredentials
    ) -> Message | bool:
        if msg.signature != exported.in_signature:
            return _error(
                msg,
                Code.EPROTO.dbus_name,
                f"Method {exported.name} expects signature {exported.in_signature!r}, "
                f"got {msg.signature!r}",
            )
        started = time.perf_counter()
        if exported.is_coroutine:
            task = asyncio.get_running_loop().create_task(
                self._dispatch_async(msg, exported, peer, started)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return True
        try:
            result = exported.func(self.service, peer, *_args(msg, exported))
            if inspect.isawaitable(result):
                # A plain method may answer at once (a cache hit) or hand back an awaitable
                # (a miss that needs I/O): only the second pays for a task.
                task = asyncio.get_running_loop().create_task(
                    self._await_reply(msg, exported, result, started)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return True
            reply = self._reply(msg, exported, _out_list(exported, result))
            self._observe(exported, started, None)
            return reply
        except Exception as exc:
            self._observe(exported, started, exc)
            return self._failure(msg, exported, exc)

    def _observe(self, exported: ExportedMethod, started: float, exc: Exception | None) -> None:
        if self.observer is not None:
            self.observer("dbus", exported.name, time.perf_counter() - started, exc)

    async def _await_reply(
        self, msg: Message, exported: ExportedMethod, pending: Any, started: float
    ) -> None:
        try:
            reply = self._reply(msg, exported, _out_list(exported, await pending))
            self._observe(exported, started, None)
        except Exception as exc:
            self._observe(exported, started, exc)
            reply = self._failure(msg, exported, exc)
        if isinstance(reply, Message) and self._bus is not None:
            self._bus.send(reply)

    async def _dispatch_async(
        self, msg: Message, exported: ExportedMethod, peer: PeerCredentials, started: float
    ) -> None:
        try:
            out = await invoke(self.service, exported, peer, _args(msg, exported))
            reply = self._reply(msg, exported, out)
            self._observe(exported, started, None)
        except Exception as exc:
            self._observe(exported, started, exc)
            reply = self._failure(msg, exported, exc)
        if isinstance(reply, Message) and self._bus is not None:
            self._bus.send(reply)

    @staticmethod
    def _reply(msg: Message, exported: ExportedMethod, out: list[Any]) -> Message | bool:
        body = exported._to_dbus(out)  # also checks the values fit the signature
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return Message.new_method_return(msg, exported.out_signature, body)

    def _refused(self, msg: Message, exported: ExportedMethod, exc: DrcError) -> None:
        """Tell the service (its optional ``refused(peer, verb, args, error)``) of a refusal:
        the one place refusals are audited and counted."""
        hook = getattr(self.service, "refused", None)
        peer = self._peers.get(msg.sender)
        if hook is None or peer is None:
            return
        try:
            hook(peer, exported.name, list(msg.body), exc)
        except Exception:
            log.exception("auditing a refused %s failed", exported.name)

    def _failure(self, msg: Message, exported: ExportedMethod, exc: Exception) -> Message | bool:
        if isinstance(exc, DrcError):
            name, text = exc.code.dbus_name, exc.message
            self._refused(msg, exported, exc)
        else:
            log.exception("internal error in %s (caller %s)", exported.name, msg.sender)
            name = Code.CRED_EXTERNAL_FAILURE.dbus_name
            text = f"internal error in {exported.name}: {exc}"
        if msg.flags & MessageFlag.NO_REPLY_EXPECTED:
            return True
        return _error(msg, name, text)


def _args(msg: Message, exported: ExportedMethod) -> list[Any]:
    """In args as plain Python: service objects never see a Variant."""
    return unwrap(msg.body) if "v" in exported.in_signature else msg.body


def _error(msg: Message, name: str, text: str) -> Message:
    return Message.new_error(msg, name, text)


@functools.cache
def _machine_id() -> str | None:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError), open(path) as f:
            if value := f.read().strip():
                return value
    return None


_watchers: set[asyncio.Task[None]] = set()


def _watch_disconnect(bus: MessageBus) -> None:
    """Consume the bus's disconnect outcome, so a dropped connection (dbus-daemon stopped)
    is noticed through ``connected`` instead of an "exception never retrieved" at exit."""

    async def watch() -> None:
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()

    task = asyncio.get_running_loop().create_task(watch())
    _watchers.add(task)
    task.add_done_callback(_watchers.discard)


# -- client side -------------------------------------------------------------------------------


def default_bus_address() -> str:
    """The system bus, unless DBUS_SYSTEM_BUS_ADDRESS points elsewhere (embedded mode, tests)."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


def _start_hint(bus_name: str, address: str) -> str:
    unit = _DAEMON_UNITS.get(bus_name)
    if unit is None:
        return ""
    if address != DEFAULT_SYSTEM_BUS:  # a private bus: drc-embedded (or a test) runs it
        return f"; start it: systemctl start {unit} (or drc-embedded start for a private bus)"
    return f"; start it: systemctl start {unit}"


def _not_running(bus_name: str, address: str) -> DrcError:
    label = _DAEMON_LABELS.get(bus_name, bus_name)
    return DrcError(
        Code.ECONNREFUSED,
        f"{label} is not running (no owner of {bus_name} on {address})"
        + _start_hint(bus_name, address),
    )


def _no_answer(bus_name: str, member: str, address: str, timeout: float) -> DrcError:
    label = _DAEMON_LABELS.get(bus_name, bus_name)
    return DrcError(
        Code.ECONNREFUSED,
        f"{label} did not answer {member} within {timeout:g} s "
        f"(is it running? {bus_name} on {address})" + _start_hint(bus_name, address),
    )


def _result(
    reply: Message | None, err: Exception | None, bus_name: str, member: str, address: str
) -> list[Any]:
    """A reply (or the bus's failure) → out args, or the DrcError it stands for."""
    if reply is None:
        if isinstance(err, (ValueError, TypeError)):  # refused while marshalling: never sent
            raise DrcError(Code.EINVAL, f"bad arguments for {member}: {err}")
        raise DrcError(
            Code.ECONNREFUSED,
            f"lost the connection to the D-Bus bus at {address} while calling {member}"
            + (f": {err}" if err else ""),
        )
    if reply.message_type is MessageType.ERROR:
        name = reply.error_name or ""
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        if name in _NOT_RUNNING_ERRORS:
            raise _not_running(bus_name, address)
        if name == _ACCESS_DENIED:
            raise DrcError(Code.EPERM, f"the D-Bus policy refused {member}: {text}")
        raise DrcError.from_dbus(name, text)
    return _reply_body(reply)


def _has_nul(value: Any) -> bool:
    """Would marshalling fail on a NUL in a string (dbus-fast finds out only while sending,
    and then drops the connection)?"""
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, Mapping):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def _call_message(
    bus_name: str, object_path: str, interface: str, member: str, signature: str, args: list
) -> Message:
    try:
        if _has_nul(args):
            raise ValueError("a string contains a NUL byte, which D-Bus cannot carry")
        body = to_dbus(signature, list(args))
        return Message(
            destination=bus_name,
            path=object_path,
            interface=interface,
            member=member,
            signature=signature,
            body=body,
        )
    except Exception as exc:
        raise DrcError(Code.EINVAL, f"bad arguments for {member}({signature}): {exc}") from exc


async def _connect(address: str, timeout: float) -> MessageBus:
    try:
        bus = MessageBus(bus_address=address, bus_type=BusType.SYSTEM, auth_timeout=timeout)
        await asyncio.wait_for(bus.connect(), timeout)
    except Exception as exc:
        reason = str(exc) or type(exc).__name__
        raise DrcError(
            Code.ECONNREFUSED, f"cannot connect to the D-Bus system bus at {address}: {reason}"
        ) from exc
    _watch_disconnect(bus)
    return bus


class BusClient:
    """An asyncio connection to the bus for calling DRC daemons."""

    def __init__(self, bus: MessageBus, address: str) -> None:
        self._bus = bus
        self.address = address

    @classmethod
    async def connect(cls, address: str | None = None, timeout: float = 5.0) -> BusClient:
        address = address or default_bus_address()
        return cls(await _connect(address, timeout), address)

    @property
    def connected(self) -> bool:
        return self._bus.connected

    @property
    def unique_name(self) -> str | None:
        return self._bus.unique_name

    async def call(
        self,
        bus_name: str,
        object_path: str,
        interface: str,
        member: str,
        signature: str,
        args: list[Any],
        timeout: float = 5.0,
    ) -> list[Any]:
        """Call a method; its out args (Variants unwrapped) or the DrcError it replied."""
        msg = _call_message(bus_name, object_path, interface, member, signature, args)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Message | None, Exception | None]] = loop.create_future()

        def done(reply: Message | None, err: Exception | None) -> None:
            if not future.done():
                future.set_result((reply, err))

        _start_call(self._bus, msg, done)
        # call_later instead of asyncio.wait_for: half the per-call cost.
        timer = loop.call_later(timeout, done, None, TimeoutError())
        try:
            reply, err = await future
        finally:
            timer.cancel()
        if isinstance(err, TimeoutError):
            self._bus._method_return_handlers.pop(msg.serial, None)
            raise _no_answer(bus_name, member, self.address, timeout)
        return _result(reply, err, bus_name, member, self.address)

    async def close(self) -> None:
        if self._bus.connected:
            self._bus.disconnect()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._bus.wait_for_disconnect(), 2)


def _start_call(
    bus: MessageBus, msg: Message, done: Callable[[Message | None, Exception | None], None]
) -> None:
    """Send a call on the bus's loop; ``done`` gets the reply (or the failure) exactly once."""
    if not bus.connected:
        done(None, ConnectionError("not connected"))
        return
    try:
        bus._call(msg, done)
    except Exception as exc:
        bus._method_return_handlers.pop(msg.serial, None)
        done(None, exc)


class _Waiter:
    """A one-shot slot a caller thread blocks on; cheaper than a concurrent Future."""

    __slots__ = ("_lock", "err", "reply")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self.reply: Message | None = None
        self.err: Exception | None = None

    def __call__(self, reply: Message | None, err: Exception | None) -> None:
        self.reply, self.err = reply, err
        with contextlib.suppress(RuntimeError):  # a late second call after a timeout
            self._lock.release()

    def wait(self, timeout: float) -> bool:
        return self._lock.acquire(timeout=timeout)


T = TypeVar("T")


class SyncBusClient:
    """A blocking bus client for CLIs and the Python client library.

    It owns a private event loop in a daemon thread, connects on the first call and again after
    the connection dropped, and may be shared between threads.
    """

    def __init__(self, address: str | None = None, timeout: float = 5.0) -> None:
        self.address = address or default_bus_address()
        self.timeout = timeout
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bus: MessageBus | None = None

    def _run(self, coro: Awaitable[T], timeout: float) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def _connected_bus(self) -> MessageBus:
        bus = self._bus
        if bus is not None and bus.connected:
            return bus
        with self._lock:
            if self._bus is not None and self._bus.connected:
                return self._bus
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="drc-bus-client", daemon=True
                )
                self._thread.start()
            if self._bus is not None:
                self._loop.call_soon_threadsafe(self._bus.disconnect)
            self._bus = None
            self._bus = self._run(_connect(self.address, self.timeout), self.timeout + 1)
            return self._bus

    def call(
        self,
        bus_name: str,
        object_path: str,
        interface: str,
        member: str,
        signature: str,
        args: list[Any],
        timeout: float | None = None,
    ) -> list[Any]:
        """As :meth:`BusClient.call`, blocking."""
        timeout = self.timeout if timeout is None else timeout
        msg = _call_message(bus_name, object_path, interface, member, signature, args)
        bus = self._connected_bus()
        assert self._loop is not None
        waiter = _Waiter()
        try:
            self._loop.call_soon_threadsafe(_start_call, bus, msg, waiter)
        except RuntimeError as exc:  # the loop was closed by close() in another thread
            raise DrcError(Code.ECONNREFUSED, f"bus client closed: {exc}") from exc
        if not waiter.wait(timeout):
            self._loop.call_soon_threadsafe(_forget_call, bus, msg)
            raise _no_answer(bus_name, member, self.address, timeout)
        return _result(waiter.reply, waiter.err, bus_name, member, self.address)

    def close(self) -> None:
        """Disconnect and stop the private loop; a later call connects again."""
        with self._lock:
            loop, thread, bus = self._loop, self._thread, self._bus
            self._loop = self._thread = self._bus = None
            if loop is None:
                return

            async def shutdown() -> None:
                if bus is not None and bus.connected:
                    bus.disconnect()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(bus.wait_for_disconnect(), 2)

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), loop).result(3)
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(3)
            if not loop.is_running():
                loop.close()

    def __enter__(self) -> SyncBusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _forget_call(bus: MessageBus, msg: Message) -> None:
    bus._method_return_handlers.pop(msg.serial, None)


__all__ = [
    "BusClient",
    "BusExporter",
    "ExportedMethod",
    "PeerCredentials",
    "SyncBusClient",
    "default_bus_address",
    "exported_methods",
    "invoke",
    "invoke_sync",
    "method",
    "to_dbus",
    "unwrap",
    "variant",
    "variant_dict",
]
