"""/usr/share/dbus-1/interfaces/*.xml is a public interface: the shipped files must be what
the daemons export. Adding or changing a @method without `make introspection` fails here."""

from __future__ import annotations

import importlib.util
import xml.etree.ElementTree as ET

import pytest

from drc.bus import BusExporter
from drc.export import merged_table
from drc.node import exports as node
from drc.server import exports as server

from pkgtools import REPO

SERVICES = [
    (server.BUS_OBJECTS, server.BUS_NAME, server.OBJECT_PATH, server.INTERFACE),
    (node.BUS_OBJECTS, node.BUS_NAME, node.OBJECT_PATH, node.INTERFACE),
]


def live_xml(classes: tuple[type, ...], bus_name: str, path: str, interface: str) -> str:
    exporter = BusExporter(
        *(cls.__new__(cls) for cls in classes),
        bus_name=bus_name,
        object_path=path,
        interface=interface,
    )
    return exporter.introspection_xml()


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s[1])
def test_shipped_introspection_is_what_the_daemon_exports(service) -> None:
    shipped = (REPO / "packaging" / "dbus" / f"{service[1]}.xml").read_text()
    assert shipped == live_xml(*service), "run `make introspection` and commit the result"


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s[1])
def test_shipped_introspection_names_the_interface_and_every_method(service) -> None:
    classes, bus_name, path, interface = service
    root = ET.fromstring((REPO / "packaging" / "dbus" / f"{bus_name}.xml").read_text())
    assert root.get("name") == path
    iface = next(i for i in root.iter("interface") if i.get("name") == interface)
    table = merged_table(*classes)
    assert {m.get("name") for m in iface.iter("method")} == set(table)


def test_generator_writes_the_shipped_files(tmp_path) -> None:
    script = REPO / "packaging" / "dbus" / "gen_introspection.py"
    spec = importlib.util.spec_from_file_location("gen_introspection", script)
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(str(tmp_path)) == 0
    for _, bus_name, _, _ in SERVICES:
        written = (tmp_path / f"{bus_name}.xml").read_text()
        assert written == (REPO / "packaging" / "dbus" / f"{bus_name}.xml").read_text()
