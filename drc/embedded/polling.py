"""Bounded waits and free loopback ports: what starting daemons, and the tests, keep needing.

One copy for drc-embedded, the private PostgreSQL and the whole test suite, so a wait is always
bounded in time, says what it waited for when it gives up, and a port is always asked of the
kernel on loopback (never another address).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(RuntimeError):
    """A bounded wait ran out; the message names what was awaited."""


def wait_for(
    check: Callable[[], T],
    timeout: float = 20.0,
    *,
    what: str = "",
    interval: float = 0.05,
) -> T:
    """Call ``check`` until it returns something true, and return that.

    ``check`` is called once more at the deadline, so a slow machine that gets there just in
    time still passes. Gives up with :class:`WaitTimeout` after ``timeout`` seconds; ``check``
    may raise to stop early (e.g. when the daemon it waits for died).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout:g} s waiting for {what or 'a condition'}")
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``host`` (an IPv4 loopback address), as the kernel
    picks it.

    The port is free when this returns; a daemon that binds it a moment later almost always
    gets it, which is all tests and drc-embedded need.
    """
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
