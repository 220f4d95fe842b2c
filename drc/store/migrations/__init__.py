"""Numbered schema migrations (``NNNN_name.py`` with ``up(migrator, db)``), applied in order.

Each file holds frozen copies of the tables it creates, independent of ``drc.store.models``.
Only DRCS runs them, at start-up, inside a transaction.
"""
