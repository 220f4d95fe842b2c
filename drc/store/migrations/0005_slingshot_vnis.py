"""Slingshot VNIs: which VNI each credential holds, and which nodes still owe its cleanup.

A VNI goes live -> cleanup (its credential freed) -> free (every node that used it confirmed
its CXI services gone and the quarantine passed); free VNIs are reused oldest first.
"""

from peewee import BigIntegerField, CharField, CompositeKey, DoubleField, IntegerField, Model


def _models(db):
    class Vni(Model):
        vni = IntegerField(primary_key=True)
        credential = BigIntegerField()
        state = CharField(max_length=8)
        changed = DoubleField()

        class Meta:
            database = db
            table_name = "slingshot_vni"
            indexes = ((("state", "changed"), False), (("credential",), False))

    class VniNode(Model):
        credential = BigIntegerField()
        node = CharField(max_length=255)
        vni = IntegerField()

        class Meta:
            database = db
            table_name = "slingshot_vni_node"
            primary_key = CompositeKey("credential", "node")
            indexes = ((("node",), False),)

    return [Vni, VniNode]


def up(migrator, db):
    db.create_tables(_models(db))


def down(migrator, db):
    db.drop_tables(_models(db))
