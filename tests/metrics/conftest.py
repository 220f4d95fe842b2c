"""An embedded cluster whose DRCS and DRCC serve Prometheus metrics on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cluster import Cluster, start_cluster, stop_cluster


@pytest.fixture
def metered(runtime, users) -> Iterator[Cluster]:
    c = start_cluster(runtime, metrics=True)
    try:
        yield c
    finally:
        stop_cluster(c)
