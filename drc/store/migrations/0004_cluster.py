"""Cluster: exactly-once link requests, and which DRCS each node follows.

``link_request`` holds the request id (``rid``) of every mutating node request, written in the
same transaction as the change it made, so a request retried on another DRCS after a fail-over
is recognised instead of run twice. ``node_follow`` says which DRCS a node daemon follows
(``drccli status``).
"""

from peewee import BigIntegerField, CharField, DoubleField, Model


def _models(db):
    class LinkRequest(Model):
        rid = CharField(max_length=64, primary_key=True)
        digest = CharField(max_length=64)
        method = CharField(max_length=64)
        credential = BigIntegerField(default=0)
        created = DoubleField(index=True)

        class Meta:
            database = db
            table_name = "link_request"

    class NodeFollow(Model):
        node = CharField(max_length=255, primary_key=True)
        server = CharField(max_length=255)
        since = DoubleField()

        class Meta:
            database = db
            table_name = "node_follow"

    return [LinkRequest, NodeFollow]


def up(migrator, db):
    db.create_tables(_models(db))


def down(migrator, db):
    db.drop_tables(_models(db))
