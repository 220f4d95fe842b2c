"""systemd's notify protocol (sd_notify(3)), in a few lines rather than a libsystemd binding.

The units are ``Type=notify`` with ``WatchdogSec=``: a daemon says ``READY=1`` once it serves,
``STOPPING=1`` when it begins to stop, and ``WATCHDOG=1`` every half ``WATCHDOG_USEC`` from a
timer on its event loop. A loop that freezes (a blocking call, a deadlock) stops the pings, and
systemd restarts the daemon: a wedged DRCS or DRCC does not sit there holding its bus name.
Outside systemd (no ``$NOTIFY_SOCKET``) every call here does nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send ``state`` ("READY=1", "STATUS=...") to systemd; False when not asked to or it
    failed (logged: a daemon never stops serving over this)."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket name
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as e:
        log.warning("cannot tell systemd %r over %s: %s", state, address.lstrip("\0"), e)
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between two ``WATCHDOG=1``: half of ``$WATCHDOG_USEC``, when the watchdog is
    on and meant for this process (``$WATCHDOG_PID``, if set, is our pid)."""
    usec, pid = os.environ.get("WATCHDOG_USEC", ""), os.environ.get("WATCHDOG_PID", "")
    try:
        if not usec or int(usec) <= 0 or (pid and int(pid) != os.getpid()):
            return None
        return int(usec) / 2e6
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r WATCHDOG_PID=%r: not numbers", usec, pid)
        return None


def feed_watchdog(interval: float) -> None:
    """``WATCHDOG=1`` now and every ``interval`` seconds, from the running loop's timer (no
    task, no thread): the pings go out only while the loop turns."""
    notify("WATCHDOG=1")
    asyncio.get_running_loop().call_later(interval, feed_watchdog, interval)
