"""The bus clients: call DRC daemons from asyncio code (:class:`BusClient`) or from plain
threads (:class:`SyncBusClient`); every failure arrives as the :class:`DrcError` it stands for.

dbus-fast private API still used, and why (no public equivalent serves):
- ``MessageBus._call(msg, callback)``: a reply callback instead of a task per call (half the
  per-call cost), and the only way to start a call from another thread's loop callback.
- ``MessageBus._method_return_handlers``: a call that timed out must forget its handler, or
  every timed-out call leaks one entry for the life of the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

from drc.bus.connection import DEFAULT_SYSTEM_BUS, default_bus_address, watch_disconnect
from drc.bus.values import reply_body, to_dbus
from drc.core.errors import Code, DrcError

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
    """The daemon owns its name but said nothing in time: it is hung or swamped, not stopped
    (a DRCS it could not reach is answered with its own ECONNREFUSED, well before this)."""
    label = _DAEMON_LABELS.get(bus_name, bus_name)
    unit = _DAEMON_UNITS.get(bus_name)
    check = f"; check it: systemctl status {unit}, its journal; restart it if hung" if unit else ""
    return DrcError(
        Code.ECONNREFUSED,
        f"{label} did not answer {member} within {timeout:g} s ({bus_name} on {address}): "
        f"it is running but hung or overloaded{check}",
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
    return reply_body(reply)


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
    watch_disconnect(bus)
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
    the connection dropped, and may be shared between threads. A forked child connects anew,
    as libdrc does: the loop's thread stays in the parent, and the daemons answer a connection
    only for the process that opened it.
    """

    def __init__(self, address: str | None = None, timeout: float = 5.0) -> None:
        self.address = address or default_bus_address()
        self.timeout = timeout
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._bus: MessageBus | None = None

    def _run(self, coro: Awaitable[T], timeout: float) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)  # type: ignore[arg-type]

    def _connected_bus(self) -> MessageBus:
        if self._pid != os.getpid():
            # Forked: the parent's loop, thread and connection are not ours to use or close
            # (their few descriptors stay open here); the lock may have been held at the fork.
            self._pid = os.getpid()
            self._lock = threading.Lock()
            self._loop = self._thread = self._bus = None
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
