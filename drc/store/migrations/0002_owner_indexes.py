"""Index credential owners: every acquire under a per-user or per-group limit counts them."""


def up(migrator, db):
    migrator.migrate(
        migrator.add_index("credential", ("uid",), False),
        migrator.add_index("credential", ("gid",), False),
    )


def down(migrator, db):
    migrator.migrate(
        migrator.drop_index("credential", "credential_uid"),
        migrator.drop_index("credential", "credential_gid"),
    )
