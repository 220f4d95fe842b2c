"""drc.sdnotify against real datagram sockets: path and abstract (@) names, the watchdog
interval systemd asks for, and silence outside systemd."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest

from drc import sdnotify


@pytest.fixture
def abstract(monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"drc-test-notify-{os.getpid()}-{os.urandom(4).hex()}"
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_abstract_socket_names_are_reached(abstract: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=serving")
    assert abstract.recv(4096) == b"READY=1\nSTATUS=serving"


def test_nothing_is_sent_outside_systemd_and_a_gone_socket_is_no_crash(monkeypatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not sdnotify.notify("READY=1")
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    assert not sdnotify.notify("READY=1")  # logged; the daemon serves on


@pytest.mark.parametrize(
    ("usec", "pid", "interval"),
    [
        ("30000000", None, 15.0),  # half of WatchdogSec=30s
        ("30000000", "self", 15.0),
        ("30000000", "1", None),  # meant for another process
        ("0", None, None),
        ("", None, None),
        ("soon", None, None),
    ],
)
def test_watchdog_interval_is_half_of_what_systemd_asks(monkeypatch, usec, pid, interval) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()) if pid == "self" else pid)
    assert sdnotify.watchdog_interval() == interval


def test_watchdog_pings_only_while_the_loop_turns(abstract: socket.socket) -> None:
    abstract.setblocking(False)

    async def body() -> None:
        sdnotify.feed_watchdog(0.05)
        await asyncio.sleep(0.32)  # the loop turns: about 7 pings

    asyncio.run(body())
    got = []
    while True:
        try:
            got.append(abstract.recv(64))
        except BlockingIOError:
            break
    assert got and set(got) == {b"WATCHDOG=1"} and 5 <= len(got) <= 8, got
