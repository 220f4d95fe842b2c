"""The shipped D-Bus policy (drc/data/org.drc.conf): only root owns the names, and only root
may call the admin methods of org.drc.Server, its Node* methods, and DRCC's root hooks.

The live tests load the file into a real dbus-daemon with the system bus's rules, have root own
both names, and call every exported method as user nobody: the bus itself must refuse exactly
the root-only ones.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import drc
from drc.bus import BusExporter
from drc.embedded.dbusd import PrivateBus, start_private_bus, stop_private_bus
from drc.export import exported_methods, merged_table
from drc.node import exports as node
from drc.nodeverbs import NodeVerbs
from drc.server import exports as server

from pkgtools import needs_root, run_as_nobody

POLICY = Path(drc.__file__).parent / "data" / "org.drc.conf"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"
UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"

SERVER_ADMIN = {
    "SetLimit",
    "ClearLimit",
    "ExpireJobs",
    "OutstandingJobs",
    "Pins",
    "ExpirePins",
    "NodeRebooted",
    "Status",
    "Servers",
}
NODE_HOOKS = {"RegisterJobPid", "JobEnded", "Counters"}


def methods(classes: tuple[type, ...]) -> dict:
    return dict(merged_table(*classes))


def root_only() -> dict[str, set[str]]:
    node_verbs = set(exported_methods(NodeVerbs))
    return {server.BUS_NAME: SERVER_ADMIN | node_verbs, node.BUS_NAME: NODE_HOOKS}


def all_methods() -> dict[str, set[str]]:
    return {
        server.BUS_NAME: set(methods(server.BUS_OBJECTS)),
        node.BUS_NAME: set(methods(node.BUS_OBJECTS)),
    }


def member_rules(policy: ET.Element, tag: str) -> dict[str, set[str]]:
    rules: dict[str, set[str]] = {server.BUS_NAME: set(), node.BUS_NAME: set()}
    for rule in policy.iter(tag):
        if rule.get("send_member"):
            rules[rule.get("send_destination")].add(rule.get("send_member"))
    return rules


def policies() -> tuple[ET.Element, ET.Element]:
    root = ET.parse(POLICY).getroot()
    default = next(p for p in root.iter("policy") if p.get("context") == "default")
    for_root = next(p for p in root.iter("policy") if p.get("user") == "root")
    return default, for_root


# -- the file -------------------------------------------------------------------------------------


def test_admin_and_hook_methods_exist_and_are_in_the_table() -> None:
    """The lists the policy is checked against name real methods (a rename must show here)."""
    assert all_methods()[server.BUS_NAME] >= SERVER_ADMIN
    assert all_methods()[node.BUS_NAME] >= NODE_HOOKS


def test_policy_denies_exactly_the_root_only_methods_to_everyone_else() -> None:
    default, _ = policies()
    assert member_rules(default, "deny") == root_only()


def test_policy_gives_root_back_every_method_it_denies() -> None:
    default, for_root = policies()
    assert member_rules(for_root, "allow") == member_rules(default, "deny")


def test_member_rules_match_by_path_so_interfaceless_calls_are_covered() -> None:
    for policy in policies():
        for rule in policy:
            if rule.get("send_member"):
                assert rule.get("send_interface") is None, ET.tostring(rule)
                assert rule.get("send_path") == OBJECTS[rule.get("send_destination")]


# -- a real dbus-daemon ---------------------------------------------------------------------------

CALLER = """
import asyncio, json, sys
from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

async def main(address, calls):
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    out = {}
    for dest, path, interface, member in calls:
        reply = await bus.call(
            Message(destination=dest, path=path, interface=interface, member=member)
        )
        error = reply.message_type is MessageType.ERROR
        out[f"{dest} {interface} {member}"] = reply.error_name if error else "ok"
    bus.disconnect()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], json.loads(sys.argv[2])))
"""

OBJECTS = {server.BUS_NAME: server.OBJECT_PATH, node.BUS_NAME: node.OBJECT_PATH}


def every_call(*, with_interface: bool = True) -> list[tuple[str, str, str | None, str]]:
    return [
        (dest, OBJECTS[dest], dest if with_interface else None, member)
        for dest, members in sorted(all_methods().items())
        for member in sorted(members)
    ]


def answers(calls: list, result: subprocess.CompletedProcess[str]) -> dict[tuple[str, str], str]:
    assert result.returncode == 0, result.stderr
    raw = json.loads(result.stdout)
    return {(d, m): raw[f"{d} {i} {m}"] for d, _, i, m in calls}


@contextmanager
def bus_with_drc_names(extra_policy: str | None = None) -> Iterator[PrivateBus]:
    """A system-like bus loaded with the policy file; root owns both names with an empty
    service, so a call the bus lets through comes back UnknownMethod from the service."""
    state = Path(tempfile.mkdtemp(prefix="drc-test-policy-", dir="/tmp"))
    state.chmod(0o755)
    files = [POLICY]
    if extra_policy is not None:
        (state / "site.conf").write_text(extra_policy)
        files.append(state / "site.conf")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def run(coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    bus = start_private_bus(state, policy_files=files)
    exporters = [
        BusExporter(object(), bus_name=name, object_path=path, interface=name)
        for name, path in OBJECTS.items()
    ]
    try:
        for e in exporters:
            run(e.start(bus.address))
        yield bus
    finally:
        for e in exporters:
            run(e.stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        stop_private_bus(bus)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    with bus_with_drc_names() as b:
        yield b


@needs_root
@pytest.mark.parametrize("with_interface", [True, False], ids=["interface", "no-interface"])
def test_nobody_is_refused_exactly_the_root_only_methods_by_the_bus(
    bus, nobody_pythonpath, with_interface
) -> None:
    calls = every_call(with_interface=with_interface)
    got = answers(calls, run_as_nobody(nobody_pythonpath, CALLER, bus.address, json.dumps(calls)))
    denied = {key for key, error in got.items() if error == ACCESS_DENIED}
    expected = {(dest, m) for dest, members in root_only().items() for m in members}
    assert denied == expected
    # Everything else reached the service (which has no such method).
    assert set(got.values()) == {ACCESS_DENIED, UNKNOWN_METHOD}


@needs_root
def test_root_reaches_every_method(bus) -> None:
    calls = every_call()
    result = subprocess.run(
        [sys.executable, "-c", CALLER, bus.address, json.dumps(calls)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert set(answers(calls, result).values()) == {UNKNOWN_METHOD}


@needs_root
def test_a_site_drop_in_opens_the_admin_methods_to_an_admin_group(nobody_pythonpath) -> None:
    """The drop-in drc-dbus(7) shows, for nobody's group: admin methods open, node verbs and
    hooks stay closed."""
    group = subprocess.run(["id", "-gn", "nobody"], capture_output=True, text=True).stdout.strip()
    allows = "\n".join(
        f'    <allow send_destination="org.drc.Server" send_path="/org/drc/Server" '
        f'send_member="{m}"/>'
        for m in sorted(SERVER_ADMIN)
    )
    drop_in = f'<busconfig>\n  <policy group="{group}">\n{allows}\n  </policy>\n</busconfig>\n'
    with bus_with_drc_names(drop_in) as site_bus:
        calls = every_call()
        got = answers(
            calls, run_as_nobody(nobody_pythonpath, CALLER, site_bus.address, json.dumps(calls))
        )
    denied = {key for key, error in got.items() if error == ACCESS_DENIED}
    expected = {(dest, m) for dest, members in root_only().items() for m in members}
    assert denied == expected - {(server.BUS_NAME, m) for m in SERVER_ADMIN}
