"""The import rules of the rooms, pinned: each module is imported in a fresh interpreter and
what it loaded is checked, so a stray import (a client pulling in a daemon, transport code
leaking into the core or the export tables) fails here rather than in a deployment.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

DBUS = ("dbus_fast", "drc.bus")
SQL = ("peewee", "psycopg", "psycopg2", "sqlite3", "drc.store")
SERVER = ("drc.server",)
NODE_DAEMON = (
    "drc.node.main",
    "drc.node.service",
    "drc.node.identity",
    "drc.node.watch",
    "drc.node.cache",
    "drc.node.slingshot",
    "drc.node.cxi",
)

#: module → prefixes of modules it must not load (directly or through anything it imports).
RULES: dict[str, tuple[str, ...]] = {
    "drc.core.service": DBUS + SQL + SERVER + ("drc.link",),
    "drc.core.model": DBUS + SQL,
    "drc.export": DBUS + SQL + SERVER + ("drc.node", "drc.link"),
    "drc.wire": DBUS + SQL + SERVER + ("drc.node", "drc.link"),
    "drc.nodeverbs": DBUS + SQL + SERVER + ("drc.node", "drc.link"),
    "drc.server.exports": DBUS,
    "drc.server.link": DBUS,
    "drc.node.exports": DBUS + SERVER + NODE_DAEMON,
    "drc.node.identity": DBUS + SERVER,
    "drc.node.service": DBUS + SERVER,
    "drc.link": DBUS + SERVER,
    "drc.client": SERVER + NODE_DAEMON + ("drc.link",) + SQL,
    "drc.node.main": SERVER + SQL,
}


def loaded_by(module: str) -> list[str]:
    code = f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def offending(loaded: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)]


@pytest.mark.parametrize("module", sorted(RULES))
def test_module_loads_nothing_of_the_rooms_it_must_not_know(module: str) -> None:
    loaded = loaded_by(module)
    assert module in loaded
    assert offending(loaded, RULES[module]) == [], f"{module} loads what it must not"


def test_the_checker_sees_a_forbidden_import() -> None:
    """The rule check above can fail: the bus package does load dbus_fast."""
    assert offending(loaded_by("drc.bus"), ("dbus_fast",))


DRC = Path(__file__).resolve().parents[1] / "drc"


def test_only_the_bus_package_imports_dbus_fast() -> None:
    importers = sorted(
        str(path.relative_to(DRC))
        for path in DRC.rglob("*.py")
        if re.search(r"^\s*(from|import) dbus_fast", path.read_text(), re.M)
    )
    assert importers and all(p.startswith("bus/") for p in importers), importers


def test_the_bus_package_uses_only_the_listed_private_dbus_fast_attributes() -> None:
    """dbus-fast's private API, each use explained in its module's docstring; a new one must
    be added there (and here) on purpose."""
    used = {
        (path.name, name)
        for path in (DRC / "bus").glob("*.py")
        for name in re.findall(r"bus\._(\w+)", path.read_text())
    }
    assert used == {
        ("exporter.py", "call"),
        ("client.py", "call"),
        ("client.py", "method_return_handlers"),
    }
    for path in (DRC / "bus").glob("*.py"):
        text = path.read_text()
        for module, name in used:
            if module == path.name:
                assert f"``MessageBus._{name}" in text, f"{module}: say why _{name} is used"
