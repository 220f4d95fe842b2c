"""The D-Bus skin: a real dbus-daemon with the system bus's policy and ours, a toy service.

What is pinned here: callers are identified by the bus (never by arguments), every failure
reaches the client as a DRC error code with its message, and no request can kill the service.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import drc
from drc.bus import (
    BusClient,
    BusExporter,
    PeerCredentials,
    SyncBusClient,
    exported_methods,
    invoke,
    method,
    unwrap,
    variant_dict,
)
from drc.core.errors import Code, DrcError
from drc.embedded.dbusd import PrivateBus, start_private_bus, stop_private_bus
from drc.embedded.polling import wait_for

POLICY = Path(drc.__file__).parent / "data" / "org.drc.conf"
SERVER = ("org.drc.Server", "/org/drc/Server", "org.drc.Server")
NOBODY = 65534

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root and runuser"
)


class Toy:
    """A service object as the daemons write them: plain Python, no D-Bus."""

    def __init__(self) -> None:
        self.peers: list[PeerCredentials] = []

    @method("uu", "u")
    def add(self, peer: PeerCredentials, a: int, b: int) -> int:
        return a + b

    @method("", "(uauu)")
    def who_am_i(self, peer: PeerCredentials) -> tuple[int, list[int], int]:
        self.peers.append(peer)
        return peer.uid, sorted(peer.gids), peer.pid

    @method("", "a{sv}")
    def info(self, peer: PeerCredentials) -> dict[str, object]:
        return {"uid": peer.uid, "name": "toy", "ok": True, "ids": [1, 2], "sub": {"x": 1.5}}

    @method("us", "")
    def refuse(self, peer: PeerCredentials, code: int, why: str) -> None:
        raise DrcError(Code(code), why)

    @method("", "")
    def crash(self, peer: PeerCredentials) -> None:
        raise KeyError("boom")

    @method("d", "s", name="Later")
    async def sleep_then_answer(self, peer: PeerCredentials, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "late"


# -- fixtures ---------------------------------------------------------------------------------


def _world_readable_tmpdir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def bus() -> Iterator[PrivateBus]:
    state = _world_readable_tmpdir("drc-test-bus-")
    private = None
    try:
        private = start_private_bus(state, policy_files=[POLICY])
        yield private
    finally:
        if private is not None:
            stop_private_bus(private)
        shutil.rmtree(state, ignore_errors=True)


class LoopThread:
    """An event loop in a thread, as the daemon runs it, so tests can block on clients."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 10):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread()
    try:
        yield lt
    finally:
        lt.close()


@pytest.fixture
def served(bus: PrivateBus, loop_thread: LoopThread) -> Iterator[tuple[BusExporter, Toy]]:
    toy = Toy()
    exporter = BusExporter(toy, bus_name=SERVER[0], object_path=SERVER[1], interface=SERVER[2])
    loop_thread.run(exporter.start(bus.address))
    try:
        yield exporter, toy
    finally:
        loop_thread.run(exporter.stop())


@pytest.fixture
def client(bus: PrivateBus) -> Iterator[SyncBusClient]:
    c = SyncBusClient(bus.address)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def nobody_pythonpath() -> Iterator[Path]:
    """The drc package and dbus_fast copied where user nobody can read them (the checkout and
    the venv may not be)."""
    import dbus_fast

    path = _world_readable_tmpdir("drc-test-py-")
    try:
        shutil.copytree(Path(drc.__file__).parent, path / "drc")
        shutil.copytree(Path(dbus_fast.__file__).parent, path / "dbus_fast")
        for root, dirs, files in os.walk(path):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def run_as_nobody(pythonpath: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(pythonpath), "HOME": "/"}
    return subprocess.run(
        [
            shutil.which("runuser") or "runuser",
            "-u",
            "nobody",
            "--",
            "/usr/bin/python3",
            "-c",
            textwrap.dedent(code),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd="/",
    )


def call(client: SyncBusClient, member: str, signature: str = "", *args: object) -> list:
    return client.call(*SERVER, member, signature, list(args))


# -- calls and errors -------------------------------------------------------------------------


def test_call_returns_values(served, client) -> None:
    assert call(client, "Add", "uu", 2, 3) == [5]
    uid, gids, pid = call(client, "WhoAmI")[0]
    assert (uid, pid) == (os.getuid(), os.getpid())
    assert os.getgid() in gids


def test_variants_go_out_plain_and_come_back_plain(served, client) -> None:
    (info,) = call(client, "Info")
    assert info == {"uid": os.getuid(), "name": "toy", "ok": True, "ids": [1, 2], "sub": {"x": 1.5}}


def test_coroutine_method_is_awaited(served, client) -> None:
    assert call(client, "Later", "d", 0.01) == ["late"]


def test_wrong_signature_is_eproto_and_the_service_still_answers(served, client) -> None:
    with pytest.raises(DrcError) as err:
        call(client, "Add", "us", 2, "3")
    assert err.value.code == Code.EPROTO
    assert err.value.message == "Method Add expects signature 'uu', got 'us'"
    assert call(client, "Add", "uu", 1, 1) == [2]


def test_drc_error_reaches_the_client_with_its_code_and_message(served, client) -> None:
    for code in (Code.ENOSPC, Code.EPERM, Code.CRED_NOT_FOUND):
        with pytest.raises(DrcError) as err:
            call(client, "Refuse", "us", int(code), f"refused with {code.name}")
        assert err.value.code == code
        assert err.value.message == f"refused with {code.name}"


def test_unexpected_exception_is_external_failure_logged_and_survived(
    served, client, caplog
) -> None:
    with caplog.at_level(logging.ERROR, logger="drc.dispatch"), pytest.raises(DrcError) as err:
        call(client, "Crash")
    assert err.value.code == Code.CRED_EXTERNAL_FAILURE
    assert err.value.message.startswith("internal error in Crash: ")
    assert "boom" in err.value.message
    assert any(r.name == "drc.dispatch" and r.exc_info for r in caplog.records)
    assert call(client, "Add", "uu", 4, 4) == [8]


def test_unknown_method_is_refused_by_name(served, client) -> None:
    with pytest.raises(DrcError) as err:
        call(client, "NoSuchMethod")
    assert err.value.code == Code.EPROTO
    assert "org.freedesktop.DBus.Error.UnknownMethod" in err.value.message
    assert call(client, "Add", "uu", 0, 1) == [1]


def test_slow_answer_times_out_as_econnrefused(served, client) -> None:
    start = time.monotonic()
    with pytest.raises(DrcError) as err:
        client.call(*SERVER, "Later", "d", [2.0], timeout=0.2)
    assert err.value.code == Code.ECONNREFUSED
    assert "did not answer Later" in err.value.message
    assert time.monotonic() - start < 1.5
    assert call(client, "Add", "uu", 1, 2) == [3]


def test_async_client_round_trip(served, bus) -> None:
    async def scenario() -> tuple[list, list]:
        c = await BusClient.connect(bus.address)
        try:
            added = await c.call(*SERVER, "Add", "uu", [20, 22])
            info = await c.call(*SERVER, "Info", "", [])
            return added, info
        finally:
            await c.close()

    added, info = asyncio.run(scenario())
    assert added == [42]
    assert info[0]["name"] == "toy"


def test_one_client_shared_by_threads(served, client) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: call(client, "Add", "uu", i, i)[0], range(200)))
    assert results == [2 * i for i in range(200)]


# -- identity ---------------------------------------------------------------------------------


def test_peer_credentials_come_from_the_bus(served, client) -> None:
    _exporter, toy = served
    call(client, "WhoAmI")
    peer = toy.peers[-1]
    assert peer.uid == os.getuid()
    assert peer.pid == os.getpid()
    assert set(os.getgroups()) | {os.getgid()} <= peer.gids
    assert peer.sender.startswith(":")


@needs_root
def test_peer_credentials_of_another_user(served, bus, nobody_pythonpath) -> None:
    _exporter, toy = served
    result = run_as_nobody(
        nobody_pythonpath,
        """
        import os, sys
        from drc.bus import SyncBusClient
        c = SyncBusClient(sys.argv[1])
        uid, gids, pid = c.call("org.drc.Server", "/org/drc/Server", "org.drc.Server",
                                "WhoAmI", "", [])[0]
        print(uid, pid == os.getpid())
        c.close()
        """,
        bus.address,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(NOBODY), "True"]
    assert toy.peers[-1].uid == NOBODY
    assert NOBODY in toy.peers[-1].gids


@needs_root
def test_only_root_may_own_the_drc_names(bus, loop_thread, nobody_pythonpath) -> None:
    script = """
        import asyncio, sys
        from drc.bus import BusExporter
        async def main():
            e = BusExporter(object(), bus_name=sys.argv[2], object_path="/org/drc/Node",
                            interface="org.drc.Node")
            try:
                await e.start(sys.argv[1])
            except RuntimeError as exc:
                print("refused:", exc)
            else:
                print("owned")
                await e.stop()
        asyncio.run(main())
        """
    for name in ("org.drc.Node", "org.drc.Server"):
        result = run_as_nobody(nobody_pythonpath, script, bus.address, name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"refused: not allowed to own {name}"), result.stdout

    # The same request from root succeeds: the refusal above is the policy, not the script.
    exporter = BusExporter(
        object(), bus_name="org.drc.Node", object_path="/org/drc/Node", interface="org.drc.Node"
    )
    loop_thread.run(exporter.start(bus.address))
    loop_thread.run(exporter.stop())


def test_a_second_owner_is_refused(served, bus, loop_thread) -> None:
    second = BusExporter(Toy(), bus_name=SERVER[0], object_path=SERVER[1], interface=SERVER[2])
    with pytest.raises(RuntimeError) as err:
        loop_thread.run(second.start(bus.address))
    assert SERVER[0] in str(err.value)
    assert bus.address in str(err.value)


def test_peer_cache_is_dropped_when_the_client_disconnects(served, bus) -> None:
    exporter, _toy = served
    lookups = exporter.credential_lookups
    c = SyncBusClient(bus.address)
    call(c, "Add", "uu", 1, 1)
    call(c, "Add", "uu", 1, 1)
    assert exporter.credential_lookups == lookups + 1  # cached after the first call
    names = set(exporter.peer_cache)
    assert len(names) >= 1
    c.close()
    wait_for(
        lambda: not names & set(exporter.peer_cache),
        5,
        what="the peer cache to forget",
        interval=0.01,
    )


# -- no daemon, no bus ------------------------------------------------------------------------


def test_unowned_name_is_econnrefused(bus, client) -> None:
    with pytest.raises(DrcError) as err:
        client.call("org.drc.Node", "/org/drc/Node", "org.drc.Node", "Access", "", [])
    assert err.value.code == Code.ECONNREFUSED
    assert "is not running (no owner of org.drc.Node on" in err.value.message


def test_no_bus_is_econnrefused_quickly(tmp_path) -> None:
    address = f"unix:path={tmp_path}/no-bus.sock"
    start = time.monotonic()
    with pytest.raises(DrcError) as err:
        SyncBusClient(address).call(*SERVER, "Add", "uu", [1, 2])
    assert err.value.code == Code.ECONNREFUSED
    assert f"cannot connect to the D-Bus system bus at {address}" in err.value.message
    with pytest.raises(DrcError) as err:
        asyncio.run(BusClient.connect(address))
    assert err.value.code == Code.ECONNREFUSED
    assert time.monotonic() - start < 2


def test_sync_client_reconnects_after_the_bus_restarts(loop_thread) -> None:
    state = _world_readable_tmpdir("drc-test-restart-")
    private = start_private_bus(state, policy_files=[POLICY])
    address = f"unix:path={private.socket_path}"
    client = SyncBusClient(address)
    try:
        assert client.call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", "", []
        )
        stop_private_bus(private)
        with pytest.raises(DrcError) as err:
            client.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "GetId",
                "",
                [],
                timeout=2,
            )
        assert err.value.code == Code.ECONNREFUSED
        private = start_private_bus(state, policy_files=[POLICY])
        assert client.call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId", "", []
        )
    finally:
        client.close()
        stop_private_bus(private)
        shutil.rmtree(state, ignore_errors=True)


# -- standard interfaces ----------------------------------------------------------------------


def test_introspection_lists_the_methods_and_argument_names(served, client) -> None:
    exporter, _toy = served
    (xml,) = client.call(
        SERVER[0], SERVER[1], "org.freedesktop.DBus.Introspectable", "Introspect", "", []
    )
    assert xml == exporter.introspection_xml()
    root = ET.fromstring(xml)
    ours = root.find("interface[@name='org.drc.Server']")
    assert ours is not None
    methods = {m.get("name"): m for m in ours.findall("method")}
    assert set(methods) == {"Add", "WhoAmI", "Info", "Refuse", "Crash", "Later"}
    add_in = [(a.get("name"), a.get("type")) for a in methods["Add"] if a.get("direction") == "in"]
    assert add_in == [("a", "u"), ("b", "u")]
    assert [a.get("type") for a in methods["WhoAmI"]] == ["(uauu)"]
    assert root.find("interface[@name='org.freedesktop.DBus.Peer']") is not None


def test_peer_interface_answers_once(served, client) -> None:
    assert client.call(SERVER[0], SERVER[1], "org.freedesktop.DBus.Peer", "Ping", "", []) == []
    (machine_id,) = client.call(
        SERVER[0], SERVER[1], "org.freedesktop.DBus.Peer", "GetMachineId", "", []
    )
    assert len(machine_id) == 32
    int(machine_id, 16)


# -- the method table, for any exporter -------------------------------------------------------


def test_exported_methods_table_and_invoke_without_a_bus() -> None:
    toy = Toy()
    table = exported_methods(toy)
    assert set(table) == {"Add", "WhoAmI", "Info", "Refuse", "Crash", "Later"}
    add = table["Add"]
    assert (add.in_signature, add.out_signature, add.arg_names) == ("uu", "u", ("a", "b"))
    peer = PeerCredentials(uid=1000, gids=frozenset({1000}), pid=1, sender="link:node1")
    assert asyncio.run(invoke(toy, add, peer, [3, 4])) == [7]
    assert asyncio.run(invoke(toy, table["WhoAmI"], peer, [])) == [(1000, [1000], 1)]
    assert asyncio.run(invoke(toy, table["Later"], peer, [0])) == ["late"]
    with pytest.raises(DrcError) as err:
        asyncio.run(invoke(toy, table["Refuse"], peer, [int(Code.EPERM), "no"]))
    assert err.value.code == Code.EPERM


def test_method_arity_is_checked_when_the_class_is_defined() -> None:
    with pytest.raises(TypeError):

        class Broken:
            @method("uu", "")
            def one_arg(self, peer: PeerCredentials, a: int) -> None: ...


def test_variant_rules() -> None:
    d = variant_dict({"b": True, "i": -1, "f": 0.5, "s": "x", "li": [1], "ls": ["a"], "d": {}})
    assert {k: v.signature for k, v in d.items()} == {
        "b": "b",
        "i": "x",
        "f": "d",
        "s": "s",
        "li": "ax",
        "ls": "as",
        "d": "a{sv}",
    }
    assert unwrap(d) == {"b": True, "i": -1, "f": 0.5, "s": "x", "li": [1], "ls": ["a"], "d": {}}
    with pytest.raises(TypeError):
        variant_dict({"x": object()})


# -- the private bus itself -------------------------------------------------------------------


def test_private_bus_is_stopped_by_pid_and_its_socket_open_to_all() -> None:
    state = _world_readable_tmpdir("drc-test-dbusd-")
    try:
        private = start_private_bus(state)
        try:
            assert os.stat(private.socket_path).st_mode & 0o666 == 0o666
            assert "<type>system</type>" in Path(private.config_path).read_text()
            os.kill(private.pid, 0)  # running
        finally:
            stop_private_bus(private)
        with pytest.raises(ProcessLookupError):
            os.kill(private.pid, 0)
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_policy_file_is_what_the_bus_loads() -> None:
    root = ET.parse(POLICY).getroot()
    owners = {
        (p.get("user"), p.get("context"), rule.tag, rule.get("own"))
        for p in root.iter("policy")
        for rule in p
        if rule.get("own")
    }
    assert ("root", None, "allow", "org.drc.Server") in owners
    assert ("root", None, "allow", "org.drc.Node") in owners
    assert not any(tag == "allow" and user != "root" for user, _, tag, _ in owners)
