"""Every database wait bounded: the timeouts reach a real PostgreSQL session and SQLite, and
the store's name in messages never carries a user or password."""

from __future__ import annotations

import asyncio
import logging
import time

from drc.store.database import StoreTimeouts, database_label, open_database
from drc.store.sql import PeeweeStore


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


def test_a_commit_no_synchronous_standby_confirms_is_answered_outcome_unknown(
    postgresql_url: str, postgresql_server: str, caplog
) -> None:
    """The synchronous standby is gone: PostgreSQL keeps the COMMIT waiting (no statement
    timeout covers that wait). The store thread's caller is answered "outcome unknown" at its
    deadline and the next caller at once; when an admin cancels the wait the change stays on
    the primary, and the log says so twice: PostgreSQL's warning in words, and that a batch
    answered "outcome unknown" did commit (a node's retry is answered from the record)."""
    import psycopg

    from drc.core.errors import Code, DrcError
    from drc.core.ports import Unit
    from drc.server.group import GroupCommit

    store = PeeweeStore.from_url(postgresql_url)
    group = GroupCommit(store, threaded=True, timeout=0.5)

    def write(batch: object) -> int | None:
        """A change that commits (credential ids come from a sequence, which no commit
        waits for): the slots of a pool are handed out in order."""
        with store.transaction(Unit(batch=batch)) as tx:
            return tx.claim_slot("test", 100)

    async def scenario(admin: psycopg.Connection) -> tuple[list, float, int]:
        # durable as in production (the test server is not), on the store thread's session
        await group.alone(lambda _: store.db.execute_sql("SET synchronous_commit = on"))
        before = await group.alone(write)
        admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'gone_standby'")
        admin.execute("SELECT pg_reload_conf()")
        await asyncio.sleep(0.3)  # every backend reads it before its next statement
        try:
            started = time.monotonic()
            first = await asyncio.gather(group.submit(write), return_exceptions=True)
            took = time.monotonic() - started
            second = await asyncio.gather(group.submit(write), return_exceptions=True)
        finally:
            admin.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'"
            )
            admin.execute("ALTER SYSTEM RESET synchronous_standby_names")
            admin.execute("SELECT pg_reload_conf()")
        for _ in range(200):  # the cancelled wait ends the batch
            if group._running is None:
                break
            await asyncio.sleep(0.05)
        return [*first, *second], took, before

    try:
        with (
            psycopg.connect(f"{postgresql_server}/postgres", autocommit=True) as admin,
            caplog.at_level(logging.ERROR),
        ):
            (first, second), took, before = asyncio.run(scenario(admin))
        assert 0.5 <= took < 1.5, f"answered after {took:.2f} s"
        for answer in (first, second):
            assert isinstance(answer, DrcError) and answer.code is Code.ECONNREFUSED, answer
        assert "outcome of this request is unknown" in first.message
        assert "has not answered" in second.message
        assert "committed on the PostgreSQL primary only" in caplog.text
        assert "answered 'outcome unknown'" in caplog.text
        with store.snapshot() as tx:  # it did commit (on the primary)
            assert tx.slots_in_use("test") == before + 2
    finally:
        group.close()
        store.close()
