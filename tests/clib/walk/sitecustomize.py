"""Loaded only by tests/clib/test_architecture_walk.py (it puts this directory first on the
daemons' PYTHONPATH): records which drc source files run between two SIGUSR2s.

First SIGUSR2: forget, start recording, write ``<pid>.on``. Second: stop, write ``<pid>``,
one path (relative to the repository) per line. A profile hook sees every Python call and
every resumed coroutine, on every thread (the store thread too).
"""

import os
import signal
import sys
import threading

_OUT = os.environ["DRC_TEST_WALK_DIR"]
_ROOT = os.environ["DRC_TEST_WALK_ROOT"].rstrip("/") + "/"
_seen: set[str] = set()
_on = False


def _profile(frame, event, arg):
    if _on and event == "call":
        name = frame.f_code.co_filename
        if name.startswith(_ROOT):
            _seen.add(name[len(_ROOT) :])


def _toggle(signum, frame):
    global _on
    pid = os.getpid()
    if not _on:
        _seen.clear()
        _on = True
        open(os.path.join(_OUT, f"{pid}.on"), "w").close()
        return
    _on = False
    with open(os.path.join(_OUT, f"{pid}.tmp"), "w") as out:
        out.write("".join(f"{name}\n" for name in sorted(_seen)))
    os.rename(os.path.join(_OUT, f"{pid}.tmp"), os.path.join(_OUT, str(pid)))


if {"drc.server.main", "drc.node.main"} & set(sys.orig_argv):  # the daemons, nothing else
    signal.signal(signal.SIGUSR2, _toggle)
    sys.setprofile(_profile)
    threading.setprofile(_profile)
