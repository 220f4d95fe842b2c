"""The export table: which methods a service object offers remotely, with which signatures.

Transport-free on purpose (no D-Bus library here): daemon logic marks its methods with
:func:`method` (as tuned's ``@exports.export``, it only marks), and every exporter — the
D-Bus one in :mod:`drc.bus`, the DRC link in :mod:`drc.server.link_exporter` — serves the same table
through :func:`exported_methods` and :func:`invoke`. Signatures are D-Bus type strings because
the bus is the strictest carrier; :func:`check_args` and :func:`check_result` hold a JSON
transport (the link) to the same types, so a method sees, and answers, the same values
whatever carried the call.

Clients are derived from the same table (:class:`Stub`): a client names the Python method,
never a member string, so renaming a verb breaks the client's import or its first call.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from drc.core.errors import Code, DrcError

if TYPE_CHECKING:
    from drc.procfs import PidFd


@dataclass(frozen=True)
class PeerCredentials:
    """Who called, as the kernel told the bus (or the DRC link's MUNGE credential).

    ``pid`` names the process that made the connection only while it lives:
    :func:`drc.procfs.connecting_process` checks it with ``process`` (the bus's pidfd, where
    the bus gives one) or else with ``since`` (CLOCK_BOOTTIME seconds when the bus announced
    the connection).
    """

    uid: int
    gids: frozenset[int]
    pid: int
    sender: str
    process: PidFd | None = None
    since: float | None = None


# -- D-Bus type signatures, parsed without a D-Bus library -------------------------------------


@dataclass(frozen=True)
class SigType:
    """One complete D-Bus type: ``token`` is its first character (``a``, ``(``, ``{`` …)."""

    signature: str
    token: str
    children: tuple[SigType, ...] = ()


_BASIC = frozenset("ybnqiuxtdsoghv")
MAX_SIGNATURE = 255  # the D-Bus limit


def _parse_one(sig: str, pos: int, depth: int) -> tuple[SigType, int]:
    if depth > 32:
        raise ValueError(f"signature {sig!r} nests too deep")
    if pos >= len(sig):
        raise ValueError(f"signature {sig!r} ends inside a type")
    token = sig[pos]
    if token in _BASIC:
        return SigType(token, token), pos + 1
    if token == "a":
        if pos + 1 < len(sig) and sig[pos + 1] == "{":
            key, end = _parse_one(sig, pos + 2, depth + 1)
            if key.token not in _BASIC or key.token == "v":
                raise ValueError(f"signature {sig!r}: a dict key must be a basic type")
            value, end = _parse_one(sig, end, depth + 1)
            if end >= len(sig) or sig[end] != "}":
                raise ValueError(f"signature {sig!r}: a dict entry holds a key and a value")
            entry = SigType(sig[pos + 1 : end + 1], "{", (key, value))
            return SigType(sig[pos : end + 1], "a", (entry,)), end + 1
        child, end = _parse_one(sig, pos + 1, depth + 1)
        return SigType(sig[pos:end], "a", (child,)), end
    if token == "(":
        children, end = [], pos + 1
        while end < len(sig) and sig[end] != ")":
            child, end = _parse_one(sig, end, depth + 1)
            children.append(child)
        if end >= len(sig) or not children:
            raise ValueError(f"signature {sig!r}: unclosed or empty struct")
        return SigType(sig[pos : end + 1], "(", tuple(children)), end + 1
    raise ValueError(f"signature {sig!r}: unknown type code {token!r}")


@functools.cache
def parse_signature(signature: str) -> tuple[SigType, ...]:
    """The complete types of a signature (``"a{sv}u"`` → ``a{sv}``, ``u``); ValueError if bad."""
    if len(signature) > MAX_SIGNATURE:
        raise ValueError(f"signature longer than {MAX_SIGNATURE} characters")
    types, pos = [], 0
    while pos < len(signature):
        t, pos = _parse_one(signature, pos, 0)
        types.append(t)
    return tuple(types)


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


def conforms(value: Any, t: SigType) -> bool:
    """Whether a plain Python value is what D-Bus type ``t`` carries (``v`` takes anything).

    Structs are lists or tuples (JSON has only lists); integers must be ``int`` proper
    (a bool is not a number here, as on the bus).
    """
    return _checker(t)(value)


#: A compiled :func:`conforms` for one type: value -> bool.
_Check = Callable[[Any], bool]


@functools.cache
def _checker(t: SigType) -> _Check:
    """:func:`conforms` for ``t`` as one closure per type, built once per type (a
    :class:`SigType` is a frozen value): every link call checks its arguments and answer,
    and walking the type tree per value was a measurable part of an access miss."""
    token, children = t.token, t.children
    if token in _INT_RANGES:
        low, high = _INT_RANGES[token]

        def number(value: Any) -> bool:
            if type(value) is int:  # the common case, then int subclasses (enums), not bool
                return low <= value <= high
            return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

        return number
    if token == "b":
        return lambda value: type(value) is bool
    if token == "d":
        return lambda value: type(value) in (int, float)
    if token in "sog":
        return lambda value: isinstance(value, str) and "\0" not in value
    if token == "v":
        return lambda value: True
    if token == "(":
        fields = tuple(_checker(c) for c in children)
        size = len(fields)

        def struct(value: Any) -> bool:
            if not isinstance(value, (list, tuple)) or len(value) != size:
                return False
            for item, check in zip(value, fields, strict=True):  # noqa: SIM110 (no generator)
                if not check(item):
                    return False
            return True

        return struct
    if token == "a":
        (child,) = children
        if child.token == "{":
            if child.signature == "{sv}":  # every caller and credential: keys alone to check
                return _string_keyed
            check_key, check_value = (_checker(c) for c in child.children)

            def mapping(value: Any) -> bool:
                if not isinstance(value, dict):
                    return False
                for k, v in value.items():  # noqa: SIM110 (no generator per value)
                    if not (check_key(k) and check_value(v)):
                        return False
                return True

            return mapping
        check_item = _checker(child)
        byte_array = child.token == "y"

        def array(value: Any) -> bool:
            if byte_array and isinstance(value, (bytes, bytearray)):
                return True
            if not isinstance(value, (list, tuple)):
                return False
            for item in value:  # noqa: SIM110 (no generator per value)
                if not check_item(item):
                    return False
            return True

        return array
    return lambda value: False


def _string_keyed(value: Any) -> bool:
    """``a{sv}``: a dict of string keys (a variant takes any value), none with a NUL. The
    keys are joined at C speed: ``join`` refuses any that is not a string."""
    if not isinstance(value, dict):
        return False
    try:
        return "\0" not in "".join(value)
    except TypeError:  # a key that is not a string
        return False


@functools.cache
def _signature_checks(signature: str) -> tuple[tuple[_Check, SigType], ...]:
    """Each complete type of ``signature`` with its compiled check."""
    return tuple((_checker(t), t) for t in parse_signature(signature))


# -- the method table --------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportedMethod:
    """One ``@method`` of a service class: what every exporter needs to serve it."""

    name: str
    in_signature: str
    out_signature: str
    func: Callable[..., Any]
    arg_names: tuple[str, ...]
    is_coroutine: bool = False
    out_count: int = 0
    #: The Python attribute it is declared as (clients call it by this name).
    attr: str = ""
    # -- traits, declared on ``@method`` and read by every list that needs one ---------------
    #: Changes state: metrics refresh their state gauges after it.
    mutating: bool = False
    #: May share one group-commit transaction with other verbs (its whole effect is in the
    #: database). A verb that frees runs external cleanups after its commit: not grouped.
    grouped: bool = False
    #: Frees a credential (external cleanups may follow its commit).
    frees: bool = False
    #: Exactly-once: a node daemon sends it with a request id, and this is what a retry
    #: answers when the first run under that id committed (results are not stored): the out
    #: args, or ``CREDENTIAL`` (the credential it made). None: not exactly-once
    #: (it changes nothing, or doing it twice is doing it once).
    replay: Any = None
    #: Never touches the store: served on the event loop, not on the store thread.
    on_loop: bool = False
    #: Its duration says something about load (long polls wait by design: not timed).
    timed: bool = True
    #: Its implementation takes the :class:`drc.core.ports.Unit` it runs in as the keyword
    #: ``unit`` (a verb that writes the store: the dispatcher hands it the request to record
    #: and the batch). Read from the implementation's signature, which must say so.
    takes_unit: bool = False

    @property
    def credential_index(self) -> int | None:
        """Which argument names a credential id (the refusal audit logs it), if one does."""
        return self.arg_names.index("credential") if "credential" in self.arg_names else None


#: ``replay=CREDENTIAL``: a retried request answers the credential its first run made.
CREDENTIAL = "credential"


F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__drc_method__"


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def method(
    in_signature: str,
    out_signature: str,
    *,
    name: str | None = None,
    mutating: bool = False,
    grouped: bool = False,
    frees: bool = False,
    replay: Any = None,
    on_loop: bool = False,
    timed: bool = True,
) -> Callable[[F], F]:
    """Mark ``fn(self, peer, *args)`` as a remote method with these D-Bus signatures (an
    implementation that writes the store also takes ``*, unit``: see ``takes_unit``).

    The keyword traits say what the verb is (:class:`ExportedMethod` documents each); every
    list of verbs with a trait (fail-over's retried verbs, group commit, replay answers,
    metrics) is derived from them with :func:`verbs`, never kept by hand.

    The function is left unchanged (the core calls it directly in tests). A subclass that
    overrides a marked method without marking it again serves it under the base's name and
    signatures: an interface class can declare verbs that another room implements.
    """
    in_types = parse_signature(in_signature)
    out_count = len(parse_signature(out_signature))
    if grouped and frees:
        raise TypeError("a verb that frees runs cleanups after its own commit: not grouped")

    def mark(fn: F) -> F:
        params = _positional(fn)
        if len(params) < 2:
            raise TypeError(f"@method {fn.__qualname__} must take (self, peer, ...)")
        arg_names = tuple(params[2:])
        if len(arg_names) != len(in_types):
            raise TypeError(
                f"@method {fn.__qualname__}: in_signature {in_signature!r} has "
                f"{len(in_types)} arguments, the function takes {len(arg_names)}"
            )
        exported = ExportedMethod(
            name=name or _camel(fn.__name__),
            in_signature=in_signature,
            out_signature=out_signature,
            func=fn,
            arg_names=arg_names,
            is_coroutine=inspect.iscoroutinefunction(fn),
            out_count=out_count,
            attr=fn.__name__,
            mutating=mutating,
            grouped=grouped,
            frees=frees,
            replay=replay,
            on_loop=on_loop,
            timed=timed,
            takes_unit=_takes_unit(fn),
        )
        setattr(fn, _MARK, exported)
        return fn

    return mark


def _positional(fn: Callable[..., Any]) -> list[str]:
    """The names of ``fn``'s positional parameters: the remote arguments after self and peer."""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(fn).parameters.values() if p.kind in kinds]


def _takes_unit(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` takes the keyword-only ``unit`` (see :attr:`ExportedMethod.takes_unit`)."""
    unit = inspect.signature(fn).parameters.get("unit")
    return unit is not None and unit.kind is inspect.Parameter.KEYWORD_ONLY


def _declared(cls: type, attr: str) -> ExportedMethod | None:
    """The ``@method`` mark of ``attr`` on the nearest class of ``cls``'s MRO that has one."""
    for base in cls.__mro__:
        mark = getattr(base.__dict__.get(attr), _MARK, None)
        if isinstance(mark, ExportedMethod):
            return mark
    return None


@functools.cache
def _class_methods(cls: type) -> Mapping[str, ExportedMethod]:
    table: dict[str, ExportedMethod] = {}
    for attr in dir(cls):
        declared = _declared(cls, attr)
        if declared is None:
            continue
        fn = getattr(cls, attr)
        if fn is not declared.func:  # implemented below the class that declared it
            params = _positional(fn)[2:]
            if len(params) != len(declared.arg_names):
                raise TypeError(
                    f"{cls.__qualname__}.{attr} takes {len(params)} arguments, "
                    f"its declaration {declared.name}({declared.in_signature}) "
                    f"{len(declared.arg_names)}"
                )
            declared = replace(
                declared,
                func=fn,
                is_coroutine=inspect.iscoroutinefunction(fn),
                takes_unit=_takes_unit(fn),
            )
        if declared.name in table:
            raise TypeError(f"{cls.__qualname__} exports two methods named {declared.name}")
        table[declared.name] = declared
    return MappingProxyType(table)


def exported_methods(service: object) -> Mapping[str, ExportedMethod]:
    """The ``@method`` table of a service object (or class), keyed by remote method name."""
    return _class_methods(service if isinstance(service, type) else type(service))


def exported(fn: Callable[..., Any]) -> ExportedMethod:
    """The declaration of one marked method: ``exported(ServerExports.acquire).name``."""
    mark = getattr(fn, _MARK, None)
    if not isinstance(mark, ExportedMethod):
        raise TypeError(f"{getattr(fn, '__qualname__', fn)!r} is not an exported @method")
    return mark


def verbs(*services: object, where: Callable[[ExportedMethod], bool]) -> frozenset[str]:
    """The remote names of the verbs of ``services`` (objects or classes) that fit ``where``:
    ``verbs(NodeVerbs, where=lambda m: m.mutating)``."""
    return frozenset(name for s in services for name, m in exported_methods(s).items() if where(m))


def merged_table(*services: object) -> dict[str, tuple[object, ExportedMethod]]:
    """One exporter serving several objects: remote name → (object, method). A name served
    twice is a programming error, caught when the exporter is built."""
    table: dict[str, tuple[object, ExportedMethod]] = {}
    for service in services:
        for name, m in exported_methods(service).items():
            if name in table:
                raise TypeError(f"{name} is exported by two objects of one exporter")
            table[name] = (service, m)
    return table


# -- checking and calling ----------------------------------------------------------------------


def check_args(exported: ExportedMethod, args: list[Any]) -> None:
    """Refuse (EINVAL, naming the argument) what the in-signature would not carry.

    Over D-Bus the bus library checked this before the method runs; a JSON transport checks
    it here, so a method never sees (and never crashes on) a None where it expects a list.
    """
    if len(args) != len(exported.arg_names):
        raise DrcError(
            Code.EINVAL,
            f"{exported.name} takes {len(exported.arg_names)} arguments, got {len(args)}",
        )
    checks = _signature_checks(exported.in_signature)
    for value, arg, (check, t) in zip(args, exported.arg_names, checks, strict=True):
        if not check(value):
            raise DrcError(
                Code.EINVAL,
                f"{exported.name}: argument {arg!r} must be of D-Bus type {t.signature!r}",
            )


def check_result(exported: ExportedMethod, out: list[Any]) -> list[Any]:
    """``out`` if it fits the out-signature; else TypeError: a bug in the method, answered
    as an internal error (the caller's request was fine)."""
    checks = _signature_checks(exported.out_signature)
    if len(out) != len(checks) or not all(
        check(v) for v, (check, _) in zip(out, checks, strict=True)
    ):
        raise TypeError(
            f"{exported.name} answered {out!r}, which does not fit {exported.out_signature!r}"
        )
    return out


def out_list(exported: ExportedMethod, result: Any) -> list[Any]:
    """A method's return value as the list of its out args."""
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
    return out_list(exported, exported.func(service, peer, *args))


async def invoke(
    service: object, exported: ExportedMethod, peer: PeerCredentials, args: list[Any]
) -> list[Any]:
    """Call a method (plain or coroutine function); the out args as a list of plain values.

    Exceptions propagate: exporters turn :class:`DrcError` into their error replies.
    """
    result = exported.func(service, peer, *args)
    if exported.is_coroutine or inspect.isawaitable(result):
        result = await result
    return out_list(exported, result)


# -- clients derived from the table ------------------------------------------------------------


def unpack(exported: ExportedMethod, out: list[Any]) -> Any:
    """Out args as a Python call returns them: None, the one value, or a tuple."""
    if exported.out_count == 0:
        return None
    if exported.out_count == 1:
        return out[0]
    return tuple(out)


class Stub:
    """Calls the verbs of an exported class through ``send(method, args) -> out args``.

    ``Stub(NodeVerbs, link.call).node_access(caller, 3)`` sends ``NodeAccess``: member
    names and signatures come from the table, so a renamed verb fails here, not on the wire.
    With ``asynchronous=True`` ``send`` returns an awaitable and so do the stub's methods.
    """

    def __init__(
        self,
        interface: type,
        send: Callable[[ExportedMethod, list[Any]], Any],
        *,
        asynchronous: bool = False,
    ) -> None:
        self._by_attr = _attr_table(interface)
        self._interface = interface
        self._send = send
        self._async = asynchronous

    def __getattr__(self, attr: str) -> Callable[..., Any]:
        exported = self._by_attr.get(attr)
        if exported is None:
            raise AttributeError(f"{self._interface.__qualname__} exports no method {attr!r}")
        send = self._send
        if self._async:

            async def call_async(*args: Any) -> Any:
                return unpack(exported, await send(exported, list(args)))

            return call_async

        def call(*args: Any) -> Any:
            return unpack(exported, send(exported, list(args)))

        return call


@functools.cache
def _attr_table(cls: type) -> Mapping[str, ExportedMethod]:
    return MappingProxyType({m.attr: m for m in _class_methods(cls).values()})


__all__ = [
    "CREDENTIAL",
    "ExportedMethod",
    "PeerCredentials",
    "SigType",
    "Stub",
    "check_args",
    "check_result",
    "conforms",
    "exported",
    "exported_methods",
    "invoke",
    "invoke_sync",
    "merged_table",
    "method",
    "out_list",
    "parse_signature",
    "unpack",
    "verbs",
]
