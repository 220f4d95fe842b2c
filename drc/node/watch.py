"""Learn that a process exited the moment it does, without polling /proc.

DRCC holds references on behalf of processes (a credential accessed by pid P of job J). When P
dies without releasing, DRC must notice so the reference goes back. A Linux pidfd
(``pidfd_open(2)``, Linux >= 5.3) becomes readable when its process exits; the asyncio loop
watches it like a socket, so thousands of processes cost one fd each and no timer.

A pid alone does not name a process (pids are reused), so every watch is keyed by
(pid, start time), and the start time is checked *after* the pidfd is open: the pidfd pins the
process it was opened on, so a pid reused between the caller's lookup and the open is seen as a
different start time instead of being watched by mistake.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import select
from collections.abc import Callable

from drc.procfs import process_start_time

log = logging.getLogger(__name__)

Key = tuple[int, int]


class ProcessWatcher:
    """Calls ``on_exit(pid, start_time)`` once when a watched process exits.

    Use from the thread running the asyncio loop (the loop is taken from the first ``watch``
    call unless given). ``on_exit`` runs in the loop; an exception in it is logged, not raised.
    """

    def __init__(
        self,
        on_exit: Callable[[int, int], None],
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._on_exit = on_exit
        self._loop = loop
        self._fds: dict[Key, int] = {}

    def watch(self, pid: int, start_time: int) -> bool:
        """Start watching the process (pid, start_time); True if it is being watched.

        False, and no callback ever, when the process has already exited (gone or a zombie) or
        the pid now names another process (its start time differs). Watching the same
        (pid, start_time) again is a no-op that returns True.
        """
        key = (pid, start_time)
        if key in self._fds:
            return True
        if pid <= 0:
            return False
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return False
        except OSError as e:
            # A thread id, not a process: EINVAL (ENOENT on recent kernels). Nothing to watch.
            if e.errno in (errno.EINVAL, errno.ENOENT):
                return False
            raise  # EMFILE/ENFILE/ENOSYS: the caller must see that watching is impossible
        try:
            # After the open: the fd now refers to whatever process had the pid at open time.
            if process_start_time(pid) != start_time or _has_exited(fd):
                os.close(fd)
                return False
            loop = self._loop or asyncio.get_running_loop()
            self._loop = loop
            loop.add_reader(fd, self._exited, key)
        except ProcessLookupError:
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        self._fds[key] = fd
        return True

    def unwatch(self, pid: int, start_time: int) -> None:
        """Stop watching (pid, start_time): no callback for it afterwards. Unknown keys are fine."""
        fd = self._fds.pop((pid, start_time), None)
        if fd is not None:
            self._release(fd)

    def watched(self) -> set[Key]:
        """The (pid, start_time) pairs being watched (exited ones drop out once reported)."""
        return set(self._fds)

    def close(self) -> None:
        """Stop watching everything and close every pidfd; no callbacks afterwards."""
        while self._fds:
            _, fd = self._fds.popitem()
            self._release(fd)

    def _exited(self, key: Key) -> None:
        fd = self._fds.pop(key, None)
        if fd is None:  # unwatched while the event was queued
            return
        self._release(fd)
        try:
            self._on_exit(*key)
        except Exception:
            log.exception("exit handler failed for pid %d (start %d)", *key)

    def _release(self, fd: int) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
        os.close(fd)


def _has_exited(pidfd: int) -> bool:
    """Whether the pidfd's process has already exited (readable now), without blocking."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))
