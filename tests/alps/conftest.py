"""The ALPS session: embedded DRCS/DRCC configured for ALPS, against the ALPS stand-in.

ALPS cannot run here: ``standin/`` (see its README) reproduces the documented behaviour and
output of ``apstat``, ``apmgr`` and libjob's ``job_getjid``. Everything else is real: DRCS with
the alps provider, DRCC with the alps adapter, the epilog hook, real users, libdrc.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from alps.alps_harness import STANDIN, Alps, StandIn, alps_config, build_libjob, restart_daemons

from drc.embedded.runtime import Runtime

from cluster import Cluster, start_cluster, stop_cluster


@pytest.fixture
def alps(monkeypatch: pytest.MonkeyPatch) -> Iterator[Alps]:
    """A fresh stand-in; daemons started afterwards find it through their environment."""
    root = Path(tempfile.mkdtemp(prefix="alps-standin-", dir="/tmp"))
    root.chmod(0o755)
    try:
        libjob = build_libjob(root)
        state = root / "state"
        standin = StandIn(state)
        monkeypatch.setenv("ALPS_STANDIN_DIR", str(state))
        monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
        monkeypatch.setenv("LD_LIBRARY_PATH", str(root))
        yield Alps(standin, state, libjob)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def cluster(runtime: Runtime, users, alps: Alps) -> Iterator[Cluster]:
    c = start_cluster(runtime)
    try:
        c.emb.config.write_text(alps_config(c.emb.config.read_text()))
        restart_daemons(c)
        yield c
    finally:
        stop_cluster(c)
