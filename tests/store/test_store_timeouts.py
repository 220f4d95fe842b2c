"""Every database wait bounded: the timeouts reach a real PostgreSQL session and SQLite, and
the store's name in messages never carries a user or password."""

from __future__ import annotations

from drc.store.sql import PeeweeStore, StoreTimeouts, database_label, open_database


def test_the_label_drops_users_passwords_and_options() -> None:
    url = "postgresql://drc:s3cret@db1:5432,drc:s3cret@db2:5433/drc?target_session_attrs=read-write"
    assert database_label(url) == "postgresql://db1:5432,db2:5433/drc"
    assert database_label("sqlite:////var/lib/drc/drcs.db") == "sqlite:////var/lib/drc/drcs.db"


def test_a_postgresql_session_runs_with_every_bound(postgresql_url: str) -> None:
    bounds = StoreTimeouts(statement=1.5, lock=0.25, idle_in_transaction=7, keepalives_idle=9)
    store = PeeweeStore.from_url(postgresql_url, bounds)  # migrations run without the bounds
    try:
        show = {
            name: store.db.execute_sql(f"SHOW {name}").fetchone()[0]
            for name in ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")
        }
        assert show == {
            "statement_timeout": "1500ms",
            "lock_timeout": "250ms",
            "idle_in_transaction_session_timeout": "7s",
        }
        params = store.db.connection().info.get_parameters()
        assert params["keepalives"] == "1" and params["keepalives_idle"] == "9"
        assert params["connect_timeout"] == "3"
        assert store.describe()["database"] == database_label(postgresql_url)
    finally:
        store.close()


def test_sqlite_waits_its_busy_timeout(tmp_path) -> None:
    db = open_database(f"sqlite:///{tmp_path}/drcs.db", StoreTimeouts(busy=0.75))
    try:
        assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 750
    finally:
        db.close()
