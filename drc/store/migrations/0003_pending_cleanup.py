"""Pending external cleanups: pdomains (and the like) of freed credentials not yet removed.

A row is written in the transaction that frees a credential of a provider with external
resources and deleted once the removal succeeded, so a failed or interrupted removal is
retried and reported instead of leaking.
"""

from peewee import AutoField, BigIntegerField, CharField, DoubleField, IntegerField, Model


def _model(db):
    class PendingCleanup(Model):
        id = AutoField()
        credential = BigIntegerField()
        provider = CharField(max_length=32)
        cookie1 = BigIntegerField()
        cookie2 = BigIntegerField()
        ptag = IntegerField()
        provider_data = CharField(max_length=255, default="")
        created = DoubleField()
        attempts = IntegerField(default=0)
        next_try = DoubleField(default=0.0, index=True)
        last_error = CharField(max_length=512, default="")

        class Meta:
            database = db
            table_name = "pending_cleanup"

    return PendingCleanup


def up(migrator, db):
    db.create_tables([_model(db)])


def down(migrator, db):
    db.drop_tables([_model(db)])
