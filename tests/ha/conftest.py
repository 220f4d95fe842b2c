"""Clusters of several nodes and two DRCS on one PostgreSQL (see tests/multinode.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from multinode import MultiNode, multinode

from drc.embedded.runtime import Runtime

from cluster import User


@pytest.fixture
def four_nodes(
    runtime: Runtime, users: dict[str, User], postgresql_url: str
) -> Iterator[MultiNode]:
    """Four nodes (node1..node4), two DRCS: nodes 1 and 3 follow DRCS 1, 2 and 4 DRCS 2."""
    with multinode(runtime, postgresql_url, nodes=4, servers=2) as c:
        yield c


@pytest.fixture
def three_nodes(
    runtime: Runtime, users: dict[str, User], postgresql_url: str
) -> Iterator[MultiNode]:
    """Three nodes, two DRCS: nodes 1 and 3 follow DRCS 1, node 2 follows DRCS 2."""
    with multinode(runtime, postgresql_url, nodes=3, servers=2) as c:
        yield c
