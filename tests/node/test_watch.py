"""ProcessWatcher against real child processes: exits seen via pidfd, pid reuse refused."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drc.node.watch import ProcessWatcher
from drc.procfs import process_start_time

BOUND = 5.0  # seconds an exit may take to be reported (it is milliseconds in practice)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def state(pid: int) -> str:
    """The process state letter (stat field 3): "Z" for a zombie."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def spawn() -> Iterator:
    """Start `sleep 60` children; every one is killed and reaped at the end."""
    children: list[subprocess.Popen] = []

    def start() -> tuple[subprocess.Popen, int]:
        p = subprocess.Popen(["sleep", "60"])
        children.append(p)
        return p, process_start_time(p.pid)

    yield start
    for p in children:
        if p.poll() is None:
            p.kill()
        p.wait()


class Recorder:
    """on_exit that records calls and wakes the test when `expected` of them arrived."""

    def __init__(self, expected: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.expected = expected
        self.done = asyncio.Event()

    def __call__(self, pid: int, start: int) -> None:
        self.calls.append((pid, start))
        if len(self.calls) >= self.expected:
            self.done.set()


async def settle(seconds: float = 0.3) -> None:
    """Let the loop run for a while, so that a wrong callback would have fired."""
    await asyncio.sleep(seconds)


def test_exit_reported_once(spawn) -> None:
    async def main() -> None:
        rec = Recorder()
        w = ProcessWatcher(rec)
        p, start = spawn()
        assert w.watch(p.pid, start)
        assert w.watched() == {(p.pid, start)}
        await settle(0.1)
        assert rec.calls == []  # alive: nothing reported
        t0 = time.monotonic()
        p.kill()
        await asyncio.wait_for(rec.done.wait(), BOUND)
        assert time.monotonic() - t0 < BOUND
        await settle()
        assert rec.calls == [(p.pid, start)]
        assert w.watched() == set()
        w.close()

    asyncio.run(main())


def test_exit_reported_before_reaping(spawn) -> None:
    """The exit counts when the process dies, not when its parent reaps the zombie."""

    async def main() -> None:
        rec = Recorder()
        w = ProcessWatcher(rec)
        p, start = spawn()
        assert w.watch(p.pid, start)
        os.kill(p.pid, signal.SIGTERM)  # no wait(): it stays a zombie
        await asyncio.wait_for(rec.done.wait(), BOUND)
        assert rec.calls == [(p.pid, start)]
        w.close()

    asyncio.run(main())


def test_already_exited_is_refused(spawn) -> None:
    async def main() -> None:
        rec = Recorder()
        w = ProcessWatcher(rec)
        p, start = spawn()
        p.kill()
        p.wait()  # reaped: the pid names nothing now
        assert w.watch(p.pid, start) is False
        assert w.watched() == set()
        await settle()
        assert rec.calls == []
        w.close()

    asyncio.run(main())


def test_zombie_is_refused(spawn) -> None:
    """A dead process not yet reaped still has /proc/PID/stat: it has exited all the same."""

    async def main() -> None:
        rec = Recorder()
        w = ProcessWatcher(rec)
        p, start = spawn()
        p.kill()
        deadline = time.monotonic() + BOUND
        while state(p.pid) != "Z":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        assert w.watch(p.pid, start) is False
        await settle()
        assert rec.calls == []
        w.close()

    asyncio.run(main())


def test_wrong_start_time_is_refused(spawn) -> None:
    """The same pid with another start time is another process (pid reuse): never watched."""

    async def main() -> None:
        rec = Recorder()
        w = ProcessWatcher(rec)
        p, start = spawn()
        before = open_fds()
        assert w.watch(p.pid, start + 1) is False
        assert w.watch(p.pid, start - 1) is False
        assert open_fds() == before  # the pidfds opened for the check were closed
        assert w.watched() == set()
        p.kill()
        await settle()
        assert rec.calls == []
        w.close()

    asyncio.run(main())


def test_watch_is_idempotent(spawn) -> None:
    async def main() -> None:
        rec = Recorder()
        w = ProcessWatcher(rec)
        p, start = spawn()
        before = open_fds()
        assert w.watch(p.pid, start)
        assert w.watch(p.pid, start)
        assert open_fds() == before + 1
        assert w.watched() == {(p.pid, start)}
        p.kill()
        await asyncio.wait_for(rec.done.wait(), BOUND)
        await settle()
        assert rec.calls == [(p.pid, start)]
        w.close()

    asyncio.run(main())


def test_unwatch_stops_callbacks(spawn) -> None:
    async def main() -> None:
        rec = Recorder()
        w = ProcessWatcher(rec)
        p, start = spawn()
        q, q_start = spawn()
        assert w.watch(p.pid, start) and w.watch(q.pid, q_start)
        w.unwatch(p.pid, start)
        w.unwatch(p.pid, start)  # twice: harmless
        w.unwatch(12345678, 1)  # never watched: harmless
        assert w.watched() == {(q.pid, q_start)}
        p.kill()
        q.kill()
        await asyncio.wait_for(rec.done.wait(), BOUND)
        await settle()
        assert rec.calls == [(q.pid, q_start)]
        w.close()

    asyncio.run(main())


def test_fifty_processes(spawn) -> None:
    async def main() -> None:
        rec = Recorder(expected=50)
        w = ProcessWatcher(rec)
        procs = [spawn() for _ in range(50)]
        assert all(w.watch(p.pid, s) for p, s in procs)
        assert len(w.watched()) == 50
        # Kill in reverse order: reports follow exits, not registration order.
        for p, _ in reversed(procs):
            p.kill()
        await asyncio.wait_for(rec.done.wait(), BOUND)
        await settle()
        assert sorted(rec.calls) == sorted((p.pid, s) for p, s in procs)
        assert w.watched() == set()
        w.close()

    asyncio.run(main())


def test_close_stops_everything(spawn) -> None:
    async def main() -> None:
        rec = Recorder()
        w = ProcessWatcher(rec)
        procs = [spawn() for _ in range(5)]
        for p, s in procs:
            assert w.watch(p.pid, s)
        w.close()
        assert w.watched() == set()
        for p, _ in procs:
            p.kill()
        await settle()
        assert rec.calls == []

    asyncio.run(main())


def test_failing_callback_does_not_stop_others(spawn, caplog) -> None:
    async def main() -> None:
        seen: list[int] = []
        done = asyncio.Event()

        def on_exit(pid: int, start: int) -> None:
            seen.append(pid)
            if len(seen) == 2:
                done.set()
            raise RuntimeError("handler bug")

        w = ProcessWatcher(on_exit)
        (p, ps), (q, qs) = spawn(), spawn()
        assert w.watch(p.pid, ps) and w.watch(q.pid, qs)
        p.kill()
        q.kill()
        await asyncio.wait_for(done.wait(), BOUND)
        assert sorted(seen) == sorted([p.pid, q.pid])
        w.close()

    asyncio.run(main())
    assert "exit handler failed" in caplog.text


def test_no_fd_leak(spawn) -> None:
    """Every path (exit, unwatch, refusal, close) gives its pidfd back."""
    before = open_fds()

    async def main() -> None:
        rec = Recorder(expected=10)
        w = ProcessWatcher(rec)
        exiting = [spawn() for _ in range(10)]
        unwatched = [spawn() for _ in range(5)]
        kept = [spawn() for _ in range(5)]
        for p, s in exiting + unwatched + kept:
            assert w.watch(p.pid, s)
            assert not w.watch(p.pid, s + 1)
        for p, s in unwatched:
            w.unwatch(p.pid, s)
        for p, _ in exiting:
            p.kill()
        await asyncio.wait_for(rec.done.wait(), BOUND)
        w.close()

    asyncio.run(main())
    assert open_fds() == before


def test_watch_without_loop_raises_and_leaks_nothing(spawn) -> None:
    """Outside a running loop (and with none given) watch() cannot register: it must say so."""
    w = ProcessWatcher(lambda pid, start: None)
    p, start = spawn()
    before = open_fds()
    with pytest.raises(RuntimeError):
        w.watch(p.pid, start)
    assert open_fds() == before
    assert w.watched() == set()


def test_thread_id_is_refused() -> None:
    """A thread id is not a process: pidfd_open refuses it, and watch() says False."""
    ready, stop = threading.Event(), threading.Event()
    tid: list[int] = []

    def body() -> None:
        tid.append(threading.get_native_id())
        ready.set()
        stop.wait(BOUND)

    t = threading.Thread(target=body)
    t.start()
    try:
        assert ready.wait(BOUND)

        async def main() -> None:
            w = ProcessWatcher(lambda pid, start: None)
            assert w.watch(tid[0], process_start_time(tid[0])) is False
            assert w.watched() == set()
            w.close()

        asyncio.run(main())
    finally:
        stop.set()
        t.join()
