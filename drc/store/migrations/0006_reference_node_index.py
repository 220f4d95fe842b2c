"""Index a credential's references by node: the non-FLEX tenant check of every access.

An access to a non-FLEX credential asks which jobs and processes hold it on the caller's node.
With only ``credential_id`` indexed that read every reference of the credential, so an access
storm slowed down as the credential spread over nodes (issue 11). An index led by
``(credential_id, node)`` finds just the node's few; it also carries ``kind, job, pid`` (what
the check reads), so it covers the query and SQLite's planner prefers it to the unique holder
index. It serves every lookup by ``credential_id`` alone too, so the single-column index the
foreign key created goes.

The index is written out in SQL: the migrator's ``add_index`` looks columns up as attributes
of a column factory whose own attribute ``node`` shadows a column of that name.
"""

CREATE = (
    'CREATE INDEX "reference_credential_id_node" ON "reference" '
    '("credential_id", "node", "kind", "job", "pid")'
)


def up(migrator, db):
    migrator.migrate(
        migrator.sql(CREATE),
        migrator.drop_index("reference", "reference_credential_id"),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.add_index("reference", ("credential_id",), False),
        migrator.drop_index("reference", "reference_credential_id_node"),
    )
