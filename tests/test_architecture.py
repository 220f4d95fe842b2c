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

ROOT = Path(__file__).resolve().parents[1]
DRC = ROOT / "drc"
MAP = (ROOT / "ARCHITECTURE.md").read_text()

#: The groups the map's rule table names, as module prefixes.
GROUPS: dict[str, tuple[str, ...]] = {
    "D-Bus": ("dbus_fast", "drc.bus"),
    "SQL": ("peewee", "psycopg", "psycopg2", "sqlite3", "drc.store"),
    "server": ("drc.server",),
    "core service": ("drc.core.service",),
    "node": ("drc.node",),
    "node daemon": tuple(
        f"drc.node.{p.stem}" for p in (DRC / "node").glob("*.py") if p.stem != "exports"
    ),
    "link": ("drc.link",),
    "providers": ("drc.providers",),
    "metrics": ("drc.metrics", "prometheus_client"),
}


def _modules(pattern: str) -> list[str]:
    """``drc.core.*`` names every module of that package; anything else names itself."""
    if not pattern.endswith(".*"):
        return [pattern]
    package = DRC.parent / pattern[:-2].replace(".", "/")
    return sorted(f"{pattern[:-2]}.{p.stem}" for p in package.glob("*.py") if p.stem != "__init__")


def _map_rules() -> dict[str, tuple[str, ...]]:
    """The "Import rules" table of ARCHITECTURE.md: module → prefixes it must not load."""
    section = MAP.split("### Import rules", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, tuple[str, ...]] = {}
    for row in re.findall(r"^\| `([\w.*]+)` \| ([^|]+) \|$", section, re.M):
        pattern, groups = row
        forbidden = tuple(p for g in groups.split(",") for p in GROUPS[g.strip()])
        for module in _modules(pattern):
            rules[module] = forbidden
    return rules


#: module → prefixes of modules it must not load (directly or through anything it imports).
RULES = _map_rules()


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


def test_the_map_states_rules_for_every_room() -> None:
    """The table was read (a reworded header would otherwise check nothing)."""
    for module in ("drc.core.service", "drc.store", "drc.link", "drc.client", "drc.node.main"):
        assert module in RULES
    assert len(RULES) >= 25


def test_every_file_the_map_names_exists() -> None:
    named = set(re.findall(r"`((?:drc|lib|plugins|tests|packaging|man)/[\w./{},]+)`", MAP))
    paths = set()
    for name in named:
        if "{" in name:  # drc/node/{exports,cache}.py
            head, alts, tail = re.match(r"(.*)\{(.*)\}(.*)", name).groups()
            paths.update(head + alt + tail for alt in alts.split(","))
        else:
            paths.add(name)
    assert len(paths) > 30
    missing = sorted(p for p in paths if not (ROOT / p.rstrip("/")).exists())
    assert missing == []


def test_every_package_and_top_module_of_drc_is_on_the_map() -> None:
    rooms = sorted(
        f"drc/{p.name}"
        for p in DRC.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and p.name != "__init__.py")
    )
    unnamed = [r for r in rooms if f"`{r}`" not in MAP and f"`{r.rsplit('/', 1)[1]}`" not in MAP]
    assert unnamed == []
