"""A throwaway PostgreSQL server for the store and cluster tests, and a fresh database per
test (:mod:`drc.embedded.postgres`). The root conftest registers these fixtures everywhere.

Without root the PostgreSQL tests are skipped (initdb refuses root, so the server runs as
``postgres`` via runuser); without an installed server they fail, naming the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from drc.embedded.postgres import fresh_database, postgresql_bindir, private_postgresql


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT`` of a private server (no database part)."""
    if os.geteuid() != 0:
        pytest.skip(
            "PostgreSQL tests need root: they run a throwaway server as the postgres user "
            "with runuser (initdb refuses to run as root)"
        )
    try:
        postgresql_bindir()
    except RuntimeError as e:
        pytest.fail(f"{e} (it is listed in .ci/apt-packages.txt)")
    with private_postgresql() as url:
        yield url


@pytest.fixture
def postgresql_url(postgresql_server: str) -> Iterator[str]:
    """A new empty database on the session's server, dropped (connections and all) after."""
    with fresh_database(postgresql_server) as url:
        yield url
