"""Write the D-Bus introspection XML the daemons export, for /usr/share/dbus-1/interfaces/.

The files are what ``BusExporter.introspection_xml()`` returns for the live service classes;
tests/packaging/test_introspection.py fails when a method changes and the files were not
regenerated (``make introspection``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from drc.bus import BusExporter
from drc.node import exports as node
from drc.server import exports as server

HERE = Path(__file__).resolve().parent
SERVICES = {
    server.BUS_NAME: (server.BUS_OBJECTS, server.OBJECT_PATH, server.INTERFACE),
    node.BUS_NAME: (node.BUS_OBJECTS, node.OBJECT_PATH, node.INTERFACE),
}


def introspection(bus_name: str) -> str:
    classes, path, interface = SERVICES[bus_name]
    # Only the classes' @method tables matter: instances without __init__ are enough.
    exporter = BusExporter(
        *(cls.__new__(cls) for cls in classes),
        bus_name=bus_name,
        object_path=path,
        interface=interface,
    )
    return exporter.introspection_xml()


def main(out_dir: str | None = None) -> int:
    target = Path(out_dir) if out_dir else HERE
    for bus_name in SERVICES:
        (target / f"{bus_name}.xml").write_text(introspection(bus_name))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
