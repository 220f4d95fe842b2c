"""A throwaway PostgreSQL server for the store and cluster tests, and a fresh database per
test (:mod:`drc.embedded.postgres`); a primary with a synchronous standby for the database's
own fail-over. The root conftest registers these fixtures everywhere.

Without root the PostgreSQL tests are skipped (initdb refuses root, so the server runs as
``postgres`` via runuser); without an installed server they fail, naming the package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from drc.embedded.postgres import (
    ReplicatedPostgresql,
    fresh_database,
    postgresql_bindir,
    private_postgresql,
    replicated_postgresql,
)


def _need_postgresql() -> None:
    if os.geteuid() != 0:
        pytest.skip(
            "PostgreSQL tests need root: they run a throwaway server as the postgres user "
            "with runuser (initdb refuses to run as root)"
        )
    try:
        postgresql_bindir()
    except RuntimeError as e:
        pytest.fail(f"{e} (it is listed in .ci/apt-packages.txt)")


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT`` of a private server (no database part)."""
    _need_postgresql()
    with private_postgresql() as url:
        yield url


@pytest.fixture
def postgresql_url(postgresql_server: str) -> Iterator[str]:
    """A new empty database on the session's server, dropped (connections and all) after."""
    with fresh_database(postgresql_server) as url:
        yield url


@pytest.fixture
def postgresql_pair() -> Iterator[ReplicatedPostgresql]:
    """A primary (127.0.0.21) and its synchronous standby (127.0.0.22), with database
    ``drc``: ``pair.url("drc")`` is the multi-host URL. Per test, as tests crash, stall and
    promote them; both stopped by pid afterwards, whatever happened."""
    import psycopg

    _need_postgresql()
    with replicated_postgresql() as pair:
        with psycopg.connect(f"{pair.server_url(0)}/postgres", autocommit=True) as admin:
            admin.execute('CREATE DATABASE "drc"')
        yield pair
