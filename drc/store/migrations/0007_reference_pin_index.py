"""Index references by uid: a user's pins count against its limits.

Every acquire under a per-user limit (the drc.conf default makes that every acquire of a user)
counts the credentials the user pins. Pins were found through the node index (pins are the
references on no node), which holds every pin of every user: 4 ms per acquire at 20,000 pins.
``(uid, kind, credential_id)`` finds one user's pins alone and covers the count. Job and process
references have uid 0, so the index adds nothing for them to look through.
"""


def up(migrator, db):
    migrator.migrate(migrator.add_index("reference", ("uid", "kind", "credential_id"), False))


def down(migrator, db):
    migrator.migrate(migrator.drop_index("reference", "reference_uid_kind_credential_id"))
