"""D-Bus transport: the exporter that puts service objects on the bus, and the bus clients.

The only package that imports dbus_fast. What a service offers is declared transport-free in
:mod:`drc.export` (re-exported here for the code that already imports it from this package);
``exporter`` serves it on a bus, ``client`` calls it, ``values`` converts plain Python values
to and from the bus's, ``connection`` holds what the two sides share.
"""

from drc.bus.client import BusClient, SyncBusClient
from drc.bus.connection import DEFAULT_SYSTEM_BUS, default_bus_address
from drc.bus.exporter import BusExporter
from drc.bus.values import to_dbus, unwrap, variant, variant_dict
from drc.export import (
    ExportedMethod,
    PeerCredentials,
    exported_methods,
    invoke,
    invoke_sync,
    method,
)

__all__ = [
    "DEFAULT_SYSTEM_BUS",
    "BusClient",
    "BusExporter",
    "ExportedMethod",
    "PeerCredentials",
    "SyncBusClient",
    "default_bus_address",
    "exported_methods",
    "invoke",
    "invoke_sync",
    "method",
    "to_dbus",
    "unwrap",
    "variant",
    "variant_dict",
]
