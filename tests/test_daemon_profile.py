"""``DRC_PROFILE=DIR``: a daemon's profile covers its event loop and the threads it starts (the
store thread of DRCS is where a verb's store work runs), written when it stops in order."""

from __future__ import annotations

import os
import pstats
import threading
from pathlib import Path

from drc.daemon import profiled


def _on_the_loop() -> int:
    return sum(range(1000))


def _on_a_thread() -> int:
    return sum(range(1000))


def test_the_profile_holds_the_main_thread_and_the_threads_it_started(tmp_path: Path) -> None:
    with profiled("drcs", str(tmp_path)):
        _on_the_loop()
        worker = threading.Thread(target=_on_a_thread)
        worker.start()
        worker.join(10)
    written = tmp_path / f"drcs-{os.getpid()}.prof"
    functions = {name for _file, _line, name in pstats.Stats(str(written)).stats}
    assert {"_on_the_loop", "_on_a_thread"} <= functions
    assert threading.getprofile() is None  # threads started later are not profiled


def test_without_a_directory_nothing_is_profiled_or_written(tmp_path: Path) -> None:
    with profiled("drcc", ""):
        assert threading.getprofile() is None
    assert not list(tmp_path.iterdir())
