"""Peewee models of the DRCS store: every table in one place, bound per store.

:func:`create_models` builds the model classes for one database, the way huey's storage
does: each :class:`~drc.store.sql.PeeweeStore` owns its own set, so several stores in one
process (an embedded cluster, the HA tests: one DRCS per state directory) never share a
binding. A process-global ``DatabaseProxy`` would let the second store silently re-point the
first one's queries at its own file; ``Database.bind_ctx`` swaps a class attribute for the
whole process, so two threads (or event loops) using two stores would race on it. Classes made
per store carry their database from birth and need no swapping.

:data:`DECLARED` is a set bound to no database: what the schema must look like (tests diff a
migrated database against it; :mod:`drc.store.sql` derives column lists from it). Migrations
in ``drc/store/migrations`` create the tables from frozen copies; a change here needs a new
numbered migration.
"""

from __future__ import annotations

from dataclasses import dataclass

from peewee import (
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    CompositeKey,
    Database,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
)


@dataclass(frozen=True)
class Models:
    """The model classes of one store, all bound to its database."""

    credential: type[Model]
    grant: type[Model]
    reference: type[Model]
    limit: type[Model]
    counter: type[Model]
    free_slot: type[Model]
    node: type[Model]
    pending_cleanup: type[Model]
    vni: type[Model]
    vni_node: type[Model]
    link_request: type[Model]
    node_follow: type[Model]

    @property
    def all(self) -> list[type[Model]]:
        return [getattr(self, name) for name in self.__dataclass_fields__]


def create_models(db: Database | None) -> Models:
    """Fresh model classes bound to ``db`` (None: bound to nothing, for declarations)."""

    class BaseModel(Model):
        class Meta:
            database = db
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
        credential = ForeignKeyField(
            CredentialRow, on_delete="CASCADE", column_name="credential_id"
        )
        kind = CharField(max_length=8)
        target = BigIntegerField()

        class Meta:
            table_name = "grant"
            indexes = ((("credential", "kind", "target"), True),)

    class ReferenceRow(BaseModel):
        # No index of its own on credential_id: (credential, node, ...) leads with it (0006).
        credential = ForeignKeyField(
            CredentialRow, on_delete="CASCADE", column_name="credential_id", index=False
        )
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
                # The non-FLEX tenant check of an access: the credential's references on
                # one node, not all of them; covering, so the planner picks it (0006).
                (("credential", "node", "kind", "job", "pid"), False),
                # A user's pins, which count against its limits (0007).
                (("uid", "kind", "credential"), False),
            )

    class LimitRow(BaseModel):
        scope = CharField(max_length=16)
        target = BigIntegerField(default=0)
        value = BigIntegerField()

        class Meta:
            table_name = "credential_limit"
            primary_key = CompositeKey("scope", "target")

    class CounterRow(BaseModel):
        """Monotonic counters: the last credential id (SQLite; PostgreSQL's is the sequence
        ``credential_id`` of migration 0008), each pool's high-water slot (a transaction
        growing a pool holds its row until commit: see drc.store.sql).
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

        Inserted in the transaction that frees the credential, deleted once released: a row
        here is an object outside DRC that DRC still owes a removal (migration 0003).
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
        """Slingshot VNIs ever handed out: live (held by ``credential``), cleanup (freed,
        waiting for node confirmations and the quarantine) or free since ``changed`` (0005)."""

        vni = IntegerField(primary_key=True)
        credential = BigIntegerField()
        state = CharField(max_length=8)
        changed = DoubleField()

        class Meta:
            table_name = "slingshot_vni"
            indexes = ((("state", "changed"), False), (("credential",), False))

    class VniNodeRow(BaseModel):
        """A node that may hold CXI services for a credential's VNI until it confirms them
        gone."""

        credential = BigIntegerField()
        node = CharField(max_length=255)
        vni = IntegerField()

        class Meta:
            table_name = "slingshot_vni_node"
            primary_key = CompositeKey("credential", "node")
            indexes = ((("node",), False),)

    class LinkRequestRow(BaseModel):
        """Exactly-once link requests (:mod:`drc.store.requests`, migration 0004)."""

        rid = CharField(max_length=64, primary_key=True)
        digest = CharField(max_length=64)
        method = CharField(max_length=64)
        credential = BigIntegerField(default=0)
        created = DoubleField(index=True)

        class Meta:
            table_name = "link_request"

    class NodeFollowRow(BaseModel):
        """Which DRCS each node daemon follows (``drccli status``, migration 0004)."""

        node = CharField(max_length=255, primary_key=True)
        server = CharField(max_length=255)
        since = DoubleField()

        class Meta:
            table_name = "node_follow"

    return Models(
        credential=CredentialRow,
        grant=GrantRow,
        reference=ReferenceRow,
        limit=LimitRow,
        counter=CounterRow,
        free_slot=FreeSlotRow,
        node=NodeRow,
        pending_cleanup=PendingCleanupRow,
        vni=VniRow,
        vni_node=VniNodeRow,
        link_request=LinkRequestRow,
        node_follow=NodeFollowRow,
    )


#: The schema as declared, bound to no database: for derivations and schema checks only.
DECLARED = create_models(None)
