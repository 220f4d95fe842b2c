"""Fixtures for tests against real daemons and real users (see tests/cluster.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from drc.embedded.runtime import Runtime, install_runtime

from cluster import Cluster, User, ensure_users, start_cluster, stop_cluster


@pytest.fixture(scope="session")
def users() -> dict[str, User]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create alice, bob and carol (CI runs as root)")
    return ensure_users()


@pytest.fixture(scope="session")
def runtime() -> Iterator[Runtime]:
    prefix = Path(tempfile.mkdtemp(prefix="drc-runtime-", dir="/tmp"))
    try:
        yield install_runtime(prefix)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


@pytest.fixture
def cluster(runtime: Runtime) -> Iterator[Cluster]:
    c = start_cluster(runtime)
    try:
        yield c
    finally:
        stop_cluster(c)
