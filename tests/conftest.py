"""Fixtures every test directory shares: a real SQLite store and the core over it; real users,
a world-readable runtime copy of drc, and an embedded cluster (see tests/cluster.py)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from multinode import two_nodes  # noqa: F401  (fixture)
from postgres_server import (  # noqa: F401  (fixtures)
    postgresql_pair,
    postgresql_server,
    postgresql_url,
)

from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.embedded.runtime import Runtime, install_runtime
from drc.providers.pool import PoolProvider
from drc.store.sql import PeeweeStore

from cluster import Cluster, User, ensure_users, start_cluster, stop_cluster
from helpers import ALICE
from scale import FUZZ_CASES, FUZZ_FAILED, record_fuzz_counts


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    record_fuzz_counts()  # for make stress's table; a no-op under make test


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test that ran fuzz cases (:func:`scale.fuzzed`) and failed is a fuzz failure."""
    before = FUZZ_CASES.total()
    try:
        return (yield)
    except BaseException:
        if FUZZ_CASES.total() > before:
            FUZZ_FAILED.append(item.nodeid)
        raise


@pytest.fixture
def daemon_logging_undone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """For a test that runs a daemon's start-up in this process: what setup_logging() set
    (root's handlers and level, logging's module flags) put back after, so later tests'
    records neither go to a stream pytest has closed nor lose their file and line."""
    for name in ("_srcfile", "logThreads", "logMultiprocessing", "logAsyncioTasks"):
        if hasattr(logging, name):
            monkeypatch.setattr(logging, name, getattr(logging, name))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PeeweeStore]:
    s = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db")
    yield s
    s.close()


@pytest.fixture
def pool() -> PoolProvider:
    return PoolProvider(cookie_min=1000, cookie_max=1099, ptag=7)


@pytest.fixture
def service(store: PeeweeStore, pool: PoolProvider) -> CredentialService:
    return CredentialService(store, pool, Policy(persistent_uids=frozenset({ALICE})))


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
