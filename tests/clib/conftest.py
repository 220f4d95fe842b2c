"""Fixtures for the C library tests; the embedded cluster and the users are those of
tests/integration (reused, not copied)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from clib.support import HERE, CLib, installed_clib

from drc.embedded.processes import alive

from cluster import Cluster


@pytest.fixture(scope="session")
def clib() -> Iterator[CLib]:
    with installed_clib() as lib:
        yield lib


@pytest.fixture(scope="session")
def client(clib: CLib) -> Path:
    """tests/clib/drc_client.c, built the way a public client is built."""
    return clib.compile(HERE / "drc_client.c", "drc_client")


@pytest.fixture
def node(cluster: Cluster) -> Cluster:
    """The cluster, asserted to run the real DRCC (org.drc.Node)."""
    assert cluster.emb.drcc_pid and alive(cluster.emb.drcc_pid), "drc-embedded started no DRCC"
    return cluster
