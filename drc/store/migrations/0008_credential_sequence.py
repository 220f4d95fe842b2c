"""PostgreSQL: credential ids from a sequence, not from the counter row.

Moving the ``credential`` counter row locked it until commit, so every acquire of every DRCS
sharing the database waited for the one before to commit. A sequence hands out ids without
holding anything; it wraps at 4294967295 back to 1 like the counter (``CYCLE``) and starts
where the counter stopped. SQLite keeps the counter (one writer at a time anyway).
"""

from peewee import PostgresqlDatabase

UINT32_MAX = 4294967295


def up(migrator, db):
    if not isinstance(db, PostgresqlDatabase):
        return
    db.execute_sql(
        f"CREATE SEQUENCE IF NOT EXISTS credential_id AS bigint "
        f"MINVALUE 1 MAXVALUE {UINT32_MAX} CYCLE"
    )
    rows = db.execute_sql("SELECT value FROM counter WHERE name = 'credential'").fetchall()
    last = rows[0][0] if rows else 0
    if last > 0:  # the next id is last + 1 (or 1 after the wrap)
        db.execute_sql("SELECT setval('credential_id', %s, true)", (last,))


def down(migrator, db):
    if isinstance(db, PostgresqlDatabase):
        db.execute_sql("DROP SEQUENCE IF EXISTS credential_id")
