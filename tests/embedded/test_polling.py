"""The suite's one bounded wait and one free-port helper (drc.embedded.polling)."""

from __future__ import annotations

import re
import socket
import time
from pathlib import Path

import pytest

from drc.embedded.polling import WaitTimeout, free_port, wait_for


def test_wait_for_returns_the_first_true_value() -> None:
    answers = iter([None, 0, [], "ready"])
    assert wait_for(lambda: next(answers), 5, interval=0.001) == "ready"


def test_wait_for_gives_up_naming_what_it_waited_for() -> None:
    calls = []
    start = time.monotonic()
    with pytest.raises(WaitTimeout, match=r"after 0\.2 s waiting for the moon"):
        wait_for(lambda: calls.append(1), 0.2, what="the moon", interval=0.01)
    assert 0.2 <= time.monotonic() - start < 2
    assert len(calls) >= 2
    assert issubclass(WaitTimeout, RuntimeError)  # drc-embedded's exit status 1


def test_wait_for_checks_once_more_at_the_deadline() -> None:
    """A condition that becomes true while the last sleep runs still counts."""
    ready_at = time.monotonic() + 0.1
    assert wait_for(lambda: time.monotonic() >= ready_at, 0.1, interval=1.0)


def test_a_check_that_raises_stops_the_wait_at_once() -> None:
    def died() -> bool:
        raise RuntimeError("munged exited with status 1")

    with pytest.raises(RuntimeError, match="munged exited"):
        wait_for(died, 30)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2"])
def test_free_port_is_bindable_on_that_loopback_address(host: str) -> None:
    port = free_port(host)
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind((host, port))
        s.listen()


def test_the_suite_and_drc_have_one_wait_for_and_one_free_port() -> None:
    """A second copy would drift (unbounded, silent on timeout, another address): use these."""
    repo = Path(__file__).resolve().parents[2]
    own = repo / "drc" / "embedded" / "polling.py"
    copies = re.compile(
        r"^\s*def _?(wait_for|wait_until|free_port)\(|\.bind\(\(\s*['\"][\d.]+['\"],\s*0\s*\)\)",
        re.M,
    )
    found = [
        str(path.relative_to(repo))
        for top in ("drc", "tests", "bench")
        for path in (repo / top).rglob("*.py")
        if path != own and ".venv" not in path.parts and copies.search(path.read_text())
    ]
    assert found == []
