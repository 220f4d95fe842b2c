"""The literals of a PostgreSQL verb's opening round trip (:func:`drc.store.statements.literal`):
the values written without the driver (NULL and booleans too) read back as themselves,
whatever the server's ``standard_conforming_strings``, and anything else still goes to the
driver's quoting; a ``%`` in a value (a request id may hold one) is no placeholder to the
driver either way."""

from __future__ import annotations

import time

import pytest

from drc.store.sql import PeeweeStore
from drc.store.statements import _quick_literals, literal

TRICKY = [
    "n1-1",
    "100%",
    "%s",
    "%%",
    "it's",
    "back\\slash",
    "\\'",
    "''",
    "a\\\\'b",
    "~!@#$%^&*()_+{}|:<>?",
    " ",
]


@pytest.mark.parametrize("conforming", ["on", "off"])
def test_quick_literals_read_back_as_themselves(postgresql_url: str, conforming: str) -> None:
    store = PeeweeStore.from_url(postgresql_url)
    try:
        db = store.db
        db.execute_sql(f"SET standard_conforming_strings = {conforming}")
        now = time.time()
        values = [*TRICKY, 0, 7, 2**40, now, 0.1, 1e-5, True, False, None]
        assert _quick_literals(values) is not None  # all of them written here
        sql = "SELECT " + ", ".join(["%s"] * len(values))
        row = db.execute_sql(literal(db, sql, values)).fetchone()
        # a float reads back as a numeric constant, the same double once in a float column
        assert [
            float(r) if type(v) is float else r for r, v in zip(row, values, strict=True)
        ] == values
        db.execute_sql("CREATE TEMPORARY TABLE t (x double precision)")
        db.execute_sql(literal(db, "INSERT INTO t VALUES (%s)", [now]))
        assert db.execute_sql("SELECT x FROM t").fetchone()[0] == now
    finally:
        store.close()


def test_other_values_go_to_the_driver(postgresql_url: str) -> None:
    store = PeeweeStore.from_url(postgresql_url)
    try:
        db = store.db
        for odd in (-1, "caf\u00e9", "tab\there", float("inf"), b"bytes"):
            assert _quick_literals([odd]) is None
        values = [-1, "caf\u00e9 100%", "tab\there", None]
        sql = "SELECT %s, %s, %s, %s"
        assert list(db.execute_sql(literal(db, sql, values)).fetchone()) == values
    finally:
        store.close()
