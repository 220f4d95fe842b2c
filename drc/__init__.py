"""drc — Dynamic RDMA Credentials.

Layout: ``drc.core`` holds the semantics (no D-Bus, no SQL); ``drc.store`` persists them with
Peewee; ``drc.providers`` allocate network resources; ``drc.server`` exports the core on D-Bus;
``drc.cli`` and ``drc.embedded`` are thin front ends.
"""

__version__ = "0.1.0"
