"""The store over PostgreSQL: the core's semantics, the hot paths, and racing DRCS processes
(the locks several DRCS take, and their races through group commit: ``test_pg_locking.py``).

The tests of ``tests/core/test_semantics.py`` and ``test_hot_paths.py`` run here again with
the ``store`` fixture overridden by a fresh PostgreSQL database, so both backends pass the same
rules; their SQLite runs stay where they are.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from peewee import PostgresqlDatabase
from test_store import race_acquire_under_limit

from drc.store.sql import PeeweeStore

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
