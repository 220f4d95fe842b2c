"""The store over PostgreSQL: the core's semantics, the hot paths, and racing DRCS processes.

The tests of ``tests/core/test_semantics.py`` and ``test_hot_paths.py`` run here again with
the ``store`` fixture overridden by a fresh PostgreSQL database, so both backends pass the same
rules; their SQLite runs stay where they are.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import OperationalError, PostgresqlDatabase
from test_store import race_acquire_under_limit

from drc.store.database import open_database
from drc.store.sql import PeeweeStore
from drc.store.statements import HOT_SQL

from helpers import LATEST_MIGRATION

TESTS = Path(__file__).parent.parent


def _tests_of(path: Path, fixtures: tuple[str, ...] = ()) -> dict[str, object]:
    """The ``test_*`` functions (and ``fixtures``) of another test file, loaded under a module
    name of its own."""
    spec = importlib.util.spec_from_file_location(f"postgresql_{path.stem}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {
        name: obj
        for name, obj in vars(module).items()
        if name.startswith("test_") or name in fixtures
    }


globals().update(_tests_of(TESTS / "core" / "test_semantics.py"))
globals().update(_tests_of(TESTS / "store" / "test_hot_paths.py"))
globals().update(_tests_of(TESTS / "slingshot" / "test_slingshot_pool.py", ("clock", "sling")))


@pytest.fixture
def store(postgresql_url: str) -> Iterator[PeeweeStore]:
    s = PeeweeStore.from_url(postgresql_url)
    assert isinstance(s.db, PostgresqlDatabase)
    yield s
    s.close()


def test_the_store_runs_on_postgresql(store: PeeweeStore):
    assert store.describe()["backend"] == "postgresql"
    assert store.schema_version() == LATEST_MIGRATION


def test_eight_processes_racing_acquire_never_exceed_the_limit_on_postgresql(postgresql_url):
    race_acquire_under_limit(postgresql_url, backend="postgresql")


def test_a_write_transaction_holds_the_lock_every_writer_takes_first(
    store: PeeweeStore, postgresql_url: str
):
    """Why reading a credential needs no ``SELECT ... FOR UPDATE`` of its own: from its first
    statement a write transaction holds the credential counter row, which every write
    transaction of every DRCS locks before reading anything, so what it read stays true
    until it commits."""
    other = open_database(postgresql_url)
    try_lock = HOT_SQL["lock"] + " NOWAIT"
    try:
        with store.transaction() as tx:
            assert tx.get_credential(1) is None
            with pytest.raises(OperationalError, match="lock"):
                other.execute_sql(try_lock)
        other.rollback()
        assert other.execute_sql(try_lock).fetchall() == [(0,)]  # free again after commit
    finally:
        other.close()
