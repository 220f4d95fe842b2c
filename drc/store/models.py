"""Peewee models of the DRCS store: every table in one place.

Bound to a database at run time (``database_proxy``), so SQLite and PostgreSQL share them.
Migrations in ``drc/store/migrations`` create these tables from frozen copies; a change here
needs a new numbered migration.
"""

from __future__ import annotations

from peewee import (
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    DatabaseProxy,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
)

database_proxy = DatabaseProxy()


class BaseModel(Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class CredentialRow(BaseModel):
    id = BigIntegerField(primary_key=True)  # uint32, assigned from the "credential" counter
    uid = BigIntegerField(index=True)
    gid = BigIntegerField(index=True)
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


class GrantRow(BaseModel):
    credential = ForeignKeyField(CredentialRow, on_delete="CASCADE", column_name="credential_id")
    kind = CharField(max_length=8)
    target = BigIntegerField()

    class Meta:
        table_name = "grant"
        indexes = ((("credential", "kind", "target"), True),)


class ReferenceRow(BaseModel):
    credential = ForeignKeyField(CredentialRow, on_delete="CASCADE", column_name="credential_id")
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


class LimitRow(BaseModel):
    scope = CharField(max_length=16)
    target = BigIntegerField(default=0)
    value = BigIntegerField()

    class Meta:
        table_name = "credential_limit"
        primary_key = CompositeKey("scope", "target")


class CounterRow(BaseModel):
    """Monotonic counters: the next credential id, each pool's high-water slot.

    Write transactions lock the credential counter row first (FOR UPDATE on PostgreSQL), which
    serializes allocation across DRCS instances sharing one database.
    """

    name = CharField(max_length=64, primary_key=True)
    value = BigIntegerField()

    class Meta:
        table_name = "counter"


class FreeSlotRow(BaseModel):
    pool = CharField(max_length=32)
    slot = BigIntegerField()

    class Meta:
        table_name = "free_slot"
        primary_key = CompositeKey("pool", "slot")


class NodeRow(BaseModel):
    """Node daemons DRCS has heard from, with the boot id they last reported."""

    name = CharField(max_length=255, primary_key=True)
    boot_id = CharField(max_length=64)
    seen = DoubleField()

    class Meta:
        table_name = "node"


class PendingCleanupRow(BaseModel):
    """External resources of a freed credential not yet released (e.g. an ALPS pdomain).

    Inserted in the transaction that frees the credential, deleted once released: a row here is
    an object outside DRC that DRC still owes a removal (migration 0003).
    """

    id = AutoField()
    credential = BigIntegerField()  # the freed credential's id (no foreign key: it is gone)
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
        table_name = "pending_cleanup"


class VniRow(BaseModel):
    """Slingshot VNIs ever handed out: live (held by ``credential``), cleanup (freed, waiting
    for node confirmations and the quarantine) or free since ``changed`` (migration 0005)."""

    vni = IntegerField(primary_key=True)
    credential = BigIntegerField()
    state = CharField(max_length=8)
    changed = DoubleField()

    class Meta:
        table_name = "slingshot_vni"


class VniNodeRow(BaseModel):
    """A node that may hold CXI services for a credential's VNI until it confirms them gone."""

    credential = BigIntegerField()
    node = CharField(max_length=255)
    vni = IntegerField()

    class Meta:
        table_name = "slingshot_vni_node"
        primary_key = CompositeKey("credential", "node")


ALL_MODELS = [
    CredentialRow,
    GrantRow,
    ReferenceRow,
    LimitRow,
    CounterRow,
    FreeSlotRow,
    NodeRow,
    PendingCleanupRow,
    VniRow,
    VniNodeRow,
]
