"""What the exporter and the clients share: the bus's own names and the connection helpers."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os

from dbus_fast.aio import MessageBus

DEFAULT_SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"

DBUS_NAME = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"


def default_bus_address() -> str:
    """The system bus, unless DBUS_SYSTEM_BUS_ADDRESS points elsewhere (embedded mode, tests)."""
    return os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or DEFAULT_SYSTEM_BUS


@functools.cache
def machine_id() -> str | None:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError), open(path) as f:
            if value := f.read().strip():
                return value
    return None


_watchers: set[asyncio.Task[None]] = set()


def watch_disconnect(bus: MessageBus) -> None:
    """Consume the bus's disconnect outcome, so a dropped connection (dbus-daemon stopped)
    is noticed through ``connected`` instead of an "exception never retrieved" at exit."""

    async def watch() -> None:
        with contextlib.suppress(Exception):
            await bus.wait_for_disconnect()

    task = asyncio.get_running_loop().create_task(watch())
    _watchers.add(task)
    task.add_done_callback(_watchers.discard)
