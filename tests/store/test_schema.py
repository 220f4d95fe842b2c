"""The store's schema three ways kept equal: the models, the migrations, the hand-written SQL.

And each store bound to its own database: several stores in one process (an embedded cluster,
the HA tests) never write into each other's files.
"""

from __future__ import annotations

import ast
import inspect
import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from peewee import Database, PostgresqlDatabase

from drc.core.model import Credential, Flags, Resources, State
from drc.store import (
    cleanups,
    credentials,
    database,
    limits,
    nodes,
    references,
    requests,
    slots,
    sql,
    vni,
)
from drc.store.models import DECLARED, Models
from drc.store.sql import PeeweeStore
from drc.store.statements import HOT_SQL, POSTGRESQL_ONLY, Statements

#: Column types by family: the models' names and what SQLite/PostgreSQL report back.
FAMILIES = {
    "integer": {"integer", "int", "bigint", "smallint", "serial", "bigserial", "auto"},
    "text": {"varchar", "character varying", "text"},
    "real": {"real", "double", "double precision", "float"},
    "boolean": {"bool", "boolean"},
}
#: Tables of the migration runner, not of drc.
BOOKKEEPING = {"schema_migration"}
#: Quoted names in the hot SQL that are aliases, not schema names.
ALIASES = {"n"}


def family(type_name: str) -> str:
    name = re.sub(r"\(.*\)$", "", type_name.strip().lower())
    for fam, names in FAMILIES.items():
        if name in names:
            return fam
    raise AssertionError(f"unknown column type {type_name!r}")


def declared_columns(db: Database, models: Models) -> dict[str, dict[str, tuple[str, bool]]]:
    """table -> column -> (type family, nullable), as the models declare them."""
    tables: dict[str, dict[str, tuple[str, bool]]] = {}
    for model in models.all:
        columns = {}
        for field in model._meta.sorted_fields:
            fam = family(field.field_type)
            columns[field.column_name] = (fam, bool(field.null))
        tables[model._meta.table_name] = columns
    return tables


def declared_indexes(models: Models) -> dict[str, set[tuple[tuple[str, ...], bool]]]:
    """table -> {(columns, unique)}: every index the models ask for besides the primary key."""
    found: dict[str, set[tuple[tuple[str, ...], bool]]] = {}
    for model in models.all:
        indexes = set()
        for index in model._meta.fields_to_index():
            columns = tuple(e.column_name for e in index._expressions)
            indexes.add((columns, bool(index._unique)))
        found[model._meta.table_name] = indexes
    return found


def migrated_schema(db: Database) -> tuple[dict, dict, dict]:
    """(columns, indexes, primary keys) of every drc table in a migrated database."""
    columns: dict[str, dict[str, tuple[str, bool]]] = {}
    indexes: dict[str, set[tuple[tuple[str, ...], bool]]] = {}
    keys: dict[str, tuple[str, ...]] = {}
    for table in set(db.get_tables()) - BOOKKEEPING:
        columns[table] = {
            c.name: (family(c.data_type), bool(c.null)) for c in db.get_columns(table)
        }
        keys[table] = tuple(db.get_primary_keys(table))
        indexes[table] = {
            (tuple(i.columns), bool(i.unique))
            for i in db.get_indexes(table)
            if not (i.unique and tuple(i.columns) == keys[table])  # the primary key's own
        }
    return columns, indexes, keys


def declared_keys(models: Models) -> dict[str, tuple[str, ...]]:
    return {
        m._meta.table_name: tuple(f.column_name for f in m._meta.get_primary_keys())
        for m in models.all
    }


def assert_schema_matches_models(store: PeeweeStore) -> None:
    db = store.db
    columns, indexes, keys = migrated_schema(db)
    want_columns = declared_columns(db, DECLARED)
    assert sorted(columns) == sorted(want_columns), "tables differ from the models"
    for table, want in want_columns.items():
        got = columns[table]
        if not isinstance(db, PostgresqlDatabase):
            # SQLite has no boolean type: a BooleanField is an INTEGER column there.
            want = {
                c: (("integer" if fam == "boolean" else fam), null)
                for c, (fam, null) in want.items()
            }
        assert got == want, f"table {table}: migrated columns differ from the model"
    assert keys == declared_keys(DECLARED)
    assert indexes == declared_indexes(DECLARED)


@pytest.fixture
def pg_store(postgresql_url: str) -> Iterator[PeeweeStore]:
    s = PeeweeStore.from_url(postgresql_url)
    yield s
    s.close()


def test_a_migrated_sqlite_database_is_what_the_models_declare(store: PeeweeStore):
    assert_schema_matches_models(store)


def test_a_migrated_postgresql_database_is_what_the_models_declare(pg_store: PeeweeStore):
    assert_schema_matches_models(pg_store)


def test_the_schema_check_sees_a_missing_index(store: PeeweeStore):
    """The diff is not vacuous: drop one index and it fails."""
    store.db.execute_sql('DROP INDEX "reference_job"')
    with pytest.raises(AssertionError):
        assert_schema_matches_models(store)


# -- the hand-written SQL ------------------------------------------------------------------


def quoted_names(sql: str) -> set[str]:
    return set(re.findall(r'"([A-Za-z_][A-Za-z0-9_]*)"', sql))


def test_the_hot_sql_names_only_tables_and_columns_of_the_models():
    known = {m._meta.table_name for m in DECLARED.all} | {
        f.column_name for m in DECLARED.all for f in m._meta.sorted_fields
    }
    for name, text in HOT_SQL.items():
        unknown = quoted_names(text) - known - ALIASES
        assert not unknown, f"{name}: {sorted(unknown)} are in no model"


def sql_literals(module: ModuleType) -> Iterator[tuple[int, str]]:
    """(line, text) of every string literal in ``module`` that reads like SQL (f-strings with
    their literal parts only) that starts like a statement; docstrings are prose."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    for node in ast.walk(tree):
        if id(node) in docstrings:
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(
                v.value
                for v in node.values
                if isinstance(v, ast.Constant) and isinstance(v.value, str)
            )
        else:
            continue
        if re.match(r"\s*(SELECT|INSERT|UPDATE|DELETE)\b", text):
            yield node.lineno, text


def test_every_sql_literal_of_the_request_records_names_only_tables_and_columns_of_the_models():
    """The request records (drc.store.requests) write their few statements inline."""
    module = requests
    known = {m._meta.table_name for m in DECLARED.all} | {
        f.column_name for m in DECLARED.all for f in m._meta.sorted_fields
    }
    found = list(sql_literals(module))
    assert len(found) >= 4
    for line, text in found:
        unknown = quoted_names(text) - known - ALIASES
        assert not unknown, f"{module.__name__} line {line}: {sorted(unknown)} are in no model"


@pytest.mark.parametrize(
    "module",
    [sql, database, credentials, references, limits, slots, cleanups, nodes, vni],
    ids=lambda m: m.__name__,
)
def test_the_row_modules_write_no_sql_text_of_their_own(module):
    """One style per kind of statement: what every verb runs is in HOT_SQL, the rest are
    Peewee queries; SQL text anywhere else would be a third style no test compiles."""
    assert [line for line, _ in sql_literals(module)] == []


def test_each_field_of_a_credential_lands_in_the_column_named_for_it(store: PeeweeStore):
    """The hot SQL takes its column lists from the model while the parameters and the row
    unpacking are written in Python: distinct values everywhere catch any mismatch, also one
    that a round trip through the store alone would hide."""
    cred = Credential(
        id=7,
        uid=11,
        gid=12,
        wlm=13,
        flags=Flags.PERSISTENT,
        state=State.RELEASED,
        resources=Resources("pool", cookie1=21, cookie2=22, ptag=23, data="d"),
        created=31.5,
        epoch=41,
    )
    with store.transaction() as tx:
        tx.insert_credential(cred)
    with sqlite3.connect(store.db.database) as conn:
        conn.row_factory = sqlite3.Row
        row = dict(conn.execute('SELECT * FROM "credential"').fetchone())
    assert row == {
        "id": 7,
        "uid": 11,
        "gid": 12,
        "wlm": 13,
        "flags": int(Flags.PERSISTENT),
        "state": State.RELEASED.value,
        "provider": "pool",
        "cookie1": 21,
        "cookie2": 22,
        "ptag": 23,
        "provider_data": "d",
        "created": 31.5,
        "epoch": 41,
    }
    with store.snapshot() as tx:
        assert tx.get_credential(7) == cred
        assert tx.list_credentials() == [cred]


def compile_every_statement(store: PeeweeStore, statements: dict[str, str]) -> None:
    """EXPLAIN each statement against the migrated database: an unknown table or column (or a
    typo) fails to compile. EXPLAIN without ANALYZE runs nothing."""
    compiled = Statements(store.db)
    with store.db.atomic() as tx:
        for name in statements:
            text = compiled.sql(name, in_size=2) if name in HOT_SQL else statements[name]
            text = text if name in HOT_SQL else text.replace("?", store.db.param)
            params = [None] * text.count(store.db.param)
            try:
                store.db.execute_sql("EXPLAIN " + text, params).fetchall()
            except Exception as err:
                raise AssertionError(f"{name} does not compile: {err}") from err
        tx.rollback()


def test_every_hot_statement_compiles_against_a_migrated_sqlite_database(store: PeeweeStore):
    # The row lock (FOR UPDATE) and the change feed (pg_notify) run on PostgreSQL only.
    compile_every_statement(store, {k: v for k, v in HOT_SQL.items() if k not in POSTGRESQL_ONLY})


def test_every_hot_statement_compiles_against_a_migrated_postgresql_database(
    pg_store: PeeweeStore,
):
    compile_every_statement(pg_store, HOT_SQL)


# -- one binding per store -------------------------------------------------------------------


def node_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {name for (name,) in conn.execute('SELECT "name" FROM "node"')}


def test_two_stores_in_one_process_write_only_to_their_own_files(tmp_path: Path):
    """Statements (a node's hello, the id counter) of each store
    land in its own file, written from two threads at once."""
    paths = [tmp_path / "a.db", tmp_path / "b.db"]
    stores = [PeeweeStore.from_url(f"sqlite:///{p}") for p in paths]
    try:
        assert stores[0].models.node is not stores[1].models.node
        errors: list[BaseException] = []

        def write(store: PeeweeStore, tag: str) -> None:
            try:
                for i in range(40):
                    with store.transaction() as tx:
                        tx.node_connected(f"{tag}{i}", "boot", 1.0)
                        tx.next_credential_id()
            except BaseException as err:  # reported below, not lost in the thread
                errors.append(err)

        threads = [
            threading.Thread(target=write, args=(s, tag))
            for s, tag in zip(stores, ("a", "b"), strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors
        assert node_names(paths[0]) == {f"a{i}" for i in range(40)}
        assert node_names(paths[1]) == {f"b{i}" for i in range(40)}
        for path in paths:
            with sqlite3.connect(path) as conn:
                (value,) = conn.execute(
                    """SELECT "value" FROM "counter" WHERE "name" = 'credential'"""
                ).fetchone()
            assert value == 40
    finally:
        for s in stores:
            s.close()


def test_a_second_store_leaves_the_first_one_bound_to_its_own_database(tmp_path: Path):
    first = PeeweeStore.from_url(f"sqlite:///{tmp_path}/first.db")
    second = PeeweeStore.from_url(f"sqlite:///{tmp_path}/second.db")
    try:
        with first.transaction() as tx:
            assert tx.node_connected("only-in-first", "boot", 1.0) is None
        with first.snapshot() as tx:
            assert tx.node_count() == 1
        with second.snapshot() as tx:
            assert tx.node_count() == 0
        with first.transaction() as tx:
            assert tx.node_connected("only-in-first", "boot-2", 2.0) == "boot"
        assert first.models.node._meta.database is first.db
        assert second.models.node._meta.database is second.db
    finally:
        first.close()
        second.close()


# -- the non-FLEX tenant check (issue 11) ----------------------------------------------------


def test_the_tenant_check_reads_only_the_nodes_references_through_its_index(
    store: PeeweeStore,
):
    plan = store.db.execute_sql(
        "EXPLAIN QUERY PLAN " + Statements(store.db).sql("tenants_on_node"), (1, "n1")
    ).fetchall()
    details = " ".join(row[-1] for row in plan)
    assert "reference_credential_id_node" in details
    assert "credential_id=? AND node=?" in details
