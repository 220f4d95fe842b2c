"""Initial schema: credentials, grants, references, limits, counters, free slots, nodes."""

from peewee import (
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
)


def up(migrator, db):
    class Base(Model):
        class Meta:
            database = db
            legacy_table_names = False

    class Credential(Base):
        id = BigIntegerField(primary_key=True)
        uid = BigIntegerField()
        gid = BigIntegerField()
        wlm = BigIntegerField(index=True)
        flags = IntegerField()
        state = CharField(max_length=16)
        provider = CharField(max_length=32)
        cookie1 = BigIntegerField()
        cookie2 = BigIntegerField()
        ptag = IntegerField()
        provider_data = CharField(max_length=255, default="")
        created = DoubleField()
        epoch = IntegerField(default=0)

        class Meta:
            table_name = "credential"

    class Grant(Base):
        credential = ForeignKeyField(Credential, on_delete="CASCADE", column_name="credential_id")
        kind = CharField(max_length=8)
        target = BigIntegerField()

        class Meta:
            table_name = "grant"
            indexes = ((("credential", "kind", "target"), True),)

    class Reference(Base):
        credential = ForeignKeyField(Credential, on_delete="CASCADE", column_name="credential_id")
        kind = CharField(max_length=8)
        node = CharField(max_length=255, default="")
        job = BigIntegerField(default=0)
        pid = BigIntegerField(default=0)
        start = BigIntegerField(default=0)
        uid = BigIntegerField(default=0)
        owner = BooleanField(default=False)

        class Meta:
            table_name = "reference"
            indexes = (
                (("credential", "kind", "node", "job", "pid", "start", "uid"), True),
                (("job",), False),
                (("node",), False),
            )

    class Limit(Base):
        scope = CharField(max_length=16)
        target = BigIntegerField(default=0)
        value = BigIntegerField()

        class Meta:
            table_name = "credential_limit"
            primary_key = CompositeKey("scope", "target")

    class Counter(Base):
        name = CharField(max_length=64, primary_key=True)
        value = BigIntegerField()

        class Meta:
            table_name = "counter"

    class FreeSlot(Base):
        pool = CharField(max_length=32)
        slot = BigIntegerField()

        class Meta:
            table_name = "free_slot"
            primary_key = CompositeKey("pool", "slot")

    class Node(Base):
        name = CharField(max_length=255, primary_key=True)
        boot_id = CharField(max_length=64)
        seen = DoubleField()

        class Meta:
            table_name = "node"

    db.create_tables([Credential, Grant, Reference, Limit, Counter, FreeSlot, Node])
    Counter.create(name="credential", value=0)
