"""Identifier against real process trees: a registered task's descendants are in its job,
matched by (pid, start time) so a reused pid is never taken for the registered task."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from drc.embedded.polling import wait_for
from drc.node.caller import Identifier
from drc.procfs import process_parent, process_start_time
from drc.wlm.alps import AlpsAdapter
from drc.wlm.base import NoWlm

JOB = 777


def children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"

    def found() -> list[int]:
        with open(path) as f:
            return [int(p) for p in f.read().split()]

    return wait_for(
        found,
        5,
        what=f"process {pid} to start a child",
        interval=0.01,
    )


@pytest.fixture
def tree() -> Iterator[tuple[int, int, int]]:
    """wrapper (sh) → sh → sleep: yields (wrapper, middle, leaf) pids; killed afterwards."""
    proc = subprocess.Popen(["sh", "-c", "sh -c 'sleep 60; :' & wait"], start_new_session=True)
    try:
        middle = children(proc.pid)[0]
        leaf = children(middle)[0]
        yield proc.pid, middle, leaf
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def caller_job(ident: Identifier, pid: int) -> int:
    return ident.job_of(pid, process_start_time(pid))


@pytest.mark.parametrize("wlm", [NoWlm(), AlpsAdapter()], ids=["none", "alps"])
def test_descendants_of_a_registered_task_are_in_its_job(tree, wlm):
    wrapper, middle, leaf = tree
    ident = Identifier("n1", wlm)
    assert caller_job(ident, leaf) == 0
    ident.register(wrapper, JOB)
    assert [caller_job(ident, p) for p in (wrapper, middle, leaf)] == [JOB] * 3
    assert caller_job(ident, os.getpid()) == 0  # the wrapper's parent is not in the job
    ident.forget_job(JOB)
    assert caller_job(ident, leaf) == 0


def test_a_reused_pid_is_not_the_registered_task(tree):
    """A registration whose start time is not the live process's (the task exited and its pid
    went to another process) puts nobody in the job."""
    wrapper, middle, leaf = tree
    ident = Identifier("n1", NoWlm())
    ident.registered[(wrapper, process_start_time(wrapper) + 1)] = JOB  # an older process
    assert caller_job(ident, leaf) == 0
    ident.register(middle, JOB + 1)
    assert caller_job(ident, leaf) == JOB + 1  # the nearest live registered ancestor


def test_an_ancestor_younger_than_its_child_stops_the_walk(tree, monkeypatch):
    """The parent pid read from stat was reused between reads: a 'parent' that started after
    its child cannot be its parent."""
    wrapper, _middle, leaf = tree
    ident = Identifier("n1", NoWlm())
    ident.register(wrapper, JOB)
    real = process_parent

    def reused(pid: int) -> tuple[int, int]:
        parent, start = real(pid)
        return (parent, start + 10**9) if pid == wrapper else (parent, start)

    monkeypatch.setattr("drc.node.caller.process_parent", reused)
    ident.registered = {(wrapper, process_start_time(wrapper) + 10**9): JOB}
    assert ident.registered_ancestor(leaf, process_start_time(leaf)) == 0
