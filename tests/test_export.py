"""The transport-free export table: signatures, argument and answer checks, declarations
implemented in another class, and the clients derived from the tables. No bus, no root."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from drc import client
from drc.bus.values import to_dbus
from drc.core.errors import Code, DrcError
from drc.export import (
    ExportedMethod,
    PeerCredentials,
    Stub,
    check_args,
    check_result,
    conforms,
    exported,
    exported_methods,
    merged_table,
    method,
    parse_signature,
)
from drc.link import LinkPeer
from drc.node.exports import NodeExports
from drc.nodeverbs import NodeVerbs
from drc.server.exports import BUS_OBJECTS, ServerExports, ServerNodeVerbs
from drc.server.link_exporter import link_server
from drc.serverclient import ServerProxy
from drc.serververbs import ServerVerbs

from helpers import link_handled

ROOT = PeerCredentials(uid=0, gids=frozenset(), pid=1, sender=":1.1")


def test_signatures_parse_into_complete_types() -> None:
    assert [t.signature for t in parse_signature("a{sv}uas(sbua(uu))")] == [
        "a{sv}",
        "u",
        "as",
        "(sbua(uu))",
    ]
    for bad in ("a", "(", "()", "a{vs}", "a{s}", "z", "(u"):
        with pytest.raises(ValueError):
            parse_signature(bad)


#: (signature, value) pairs, each with whether the bus would carry it.
SAMPLES: list[tuple[str, Any, bool]] = [
    ("u", 0, True),
    ("u", 2**32 - 1, True),
    ("u", 2**32, False),
    ("u", -1, False),
    ("u", "3", False),
    ("u", None, False),
    ("t", 2**64 - 1, True),
    ("x", -(2**63), True),
    ("b", True, True),
    ("s", "node1", True),
    ("s", 3, False),
    ("as", ["a", "b"], True),
    ("as", ["a", 1], False),
    ("au", [1, 2], True),
    ("au", None, False),
    ("a(ut)", [(1, 2), [3, 4]], True),
    ("a(ut)", [(1,)], False),
    ("(sbua(uu))", ("g", True, 3, [(1, 2)]), True),
    ("a{sv}", {"uid": 1, "gids": [1, 2], "node": "n"}, True),
    ("a{sv}", {1: "x"}, False),
    ("a{st}", {"x": 1}, True),
    ("a{st}", {"x": -1}, False),
]


@pytest.mark.parametrize(("signature", "value", "fits"), SAMPLES)
def test_the_check_agrees_with_the_bus(signature: str, value: Any, fits: bool) -> None:
    """The link checks with :func:`conforms`; the bus with dbus-fast. They must agree."""
    (t,) = parse_signature(signature)
    assert conforms(value, t) is fits
    try:
        to_dbus(signature, [value])
        bus_fits = True
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
        bus_fits = False
    assert bus_fits is fits


class Toy:
    @method("sau", "au")
    def trim(self, peer: PeerCredentials, node: str, jobs: list[int]) -> list[int]:
        return jobs


def test_bad_arguments_are_refused_by_name_and_bad_answers_are_internal_errors() -> None:
    trim = exported(Toy.trim)
    check_args(trim, ["n", [1]])
    with pytest.raises(DrcError) as err:
        check_args(trim, ["n", None])
    assert err.value.code is Code.EINVAL and "'jobs'" in err.value.message
    with pytest.raises(DrcError, match="takes 2 arguments"):
        check_args(trim, ["n"])
    assert check_result(trim, [[1, 2]]) == [[1, 2]]
    with pytest.raises(TypeError, match="does not fit"):
        check_result(trim, [["x"]])


def test_the_server_implements_every_node_verb_as_declared() -> None:
    declared = exported_methods(NodeVerbs)
    served = exported_methods(ServerNodeVerbs)
    assert {n: (m.in_signature, m.out_signature) for n, m in served.items()} == {
        n: (m.in_signature, m.out_signature) for n, m in declared.items()
    }
    stubs = {m.func for m in declared.values()}
    assert not stubs & {m.func for m in served.values()}, "a node verb is not implemented"
    with pytest.raises(NotImplementedError):
        NodeVerbs().node_hello(ROOT, "n", "b")


def test_an_implementation_must_take_the_declared_arguments() -> None:
    class Wrong(NodeVerbs):
        def node_hello(self, peer: PeerCredentials, node: str) -> bool:  # type: ignore[override]
            return False

    with pytest.raises(TypeError, match="takes 1 arguments"):
        exported_methods(Wrong)


def test_drcs_bus_serves_user_and_node_verbs_without_a_name_twice() -> None:
    users, nodes = (set(exported_methods(cls)) for cls in BUS_OBJECTS)
    assert not users & nodes
    assert "Acquire" in users and "NodeAccess" in nodes
    assert set(merged_table(*BUS_OBJECTS)) == users | nodes
    with pytest.raises(TypeError, match="exported by two objects"):
        merged_table(ServerExports, ServerExports)


class Recorder:
    """A send function that records what a derived client put on the wire."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = answers
        self.sent: list[tuple[str, str, list[Any]]] = []

    def __call__(self, m: ExportedMethod, args: list[Any]) -> list[Any]:
        self.sent.append((m.name, m.in_signature, args))
        return self.answers.get(m.name, [None] * m.out_count)


def test_a_stub_sends_the_tables_names_and_signatures() -> None:
    rec = Recorder({"Access": [1, 2, 3, 4], "Acquire": [9]})
    stub: Any = Stub(NodeExports, rec)
    assert stub.acquire(0) == 9
    assert stub.access(1, 0) == (1, 2, 3, 4)
    assert stub.release_local(1) is None
    assert rec.sent == [("Acquire", "u", [0]), ("Access", "uu", [1, 0]), ("ReleaseLocal", "u", [1])]
    with pytest.raises(AttributeError, match="exports no method 'acces'"):
        stub.acces(1, 0)


def test_every_python_client_call_is_a_member_of_the_table_with_its_signature(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """drc.client and ServerProxy, every public call, against the exported tables."""
    rec = Recorder(
        {
            "Access": [1, 2, 3, 4],
            "AccessWithToken": [1, 2, 3, 4],
            "AccessSlingshot": [1, 2000, "cxi0:5"],
            "Limits": [[("uid", 1, 2)]],
            "Pins": [[(1, 2, 1, "active")]],
        }
    )
    monkeypatch.setattr(client, "_node", Stub(NodeExports, rec))
    client.acquire(0)
    client.access(1)
    client.access_slingshot(1)
    client.access_with_token("t")
    client.get_credential_token(1)
    client.grant(1, uid=2)
    client.revoke(1, gid=2)
    client.release(1)
    client.release_local(client.AccessInfo(1, 2, 3, 4))
    client.get_wlm_id()
    proxy = ServerProxy.__new__(ServerProxy)
    Stub.__init__(proxy, ServerVerbs, rec)
    proxy.acquire()
    proxy.grant(1, 2, 4)
    proxy.revoke(1, 2, 4)
    proxy.access(1)
    proxy.release(1)
    proxy.list()
    proxy.show(1)
    proxy.limits()
    proxy.set_limit("uid", 1, 2)
    proxy.clear_limit("uid", 1)
    proxy.expire_jobs([1])
    proxy.outstanding_jobs()
    proxy.node_rebooted("n")
    proxy.status()
    proxy.servers()
    proxy.pins()
    proxy.expire_pins(1)
    tables = {**exported_methods(NodeExports), **exported_methods(ServerExports)}
    for name, signature, args in rec.sent:
        assert tables[name].in_signature == signature
        check_args(tables[name], args)
    assert len(rec.sent) == 27


def test_drcs_serves_exactly_the_verbs_its_clients_derive_from() -> None:
    """ServerProxy's table (drc.serververbs) is what DRCS's ServerExports serves: same names,
    signatures and argument names; implementations only, no verb of their own."""
    declared, served = exported_methods(ServerVerbs), exported_methods(ServerExports)
    assert sorted(served) == sorted(declared)
    for name, m in served.items():
        d = declared[name]
        assert (m.in_signature, m.out_signature, m.arg_names) == (
            d.in_signature,
            d.out_signature,
            d.arg_names,
        )
        assert m.func is not d.func, f"{name} is declared but not implemented by ServerExports"
    assert served["Servers"].is_coroutine


class BadNodes(ServerNodeVerbs):
    """Node verbs answering what their signatures don't carry (a bug the link must catch)."""

    def __init__(self) -> None:
        pass

    def node_hello(self, peer: PeerCredentials, node: str, boot_id: str, *, unit: Any) -> Any:
        return "yes"

    def node_processes(self, peer: PeerCredentials, node: str) -> Any:
        return [(1, 2)]


def test_the_link_checks_arguments_and_answers_as_the_bus_does() -> None:
    server = link_server(BadNodes(), "127.0.0.1:0", munge_socket=None, node_uids={0})
    node = LinkPeer(0, 0, "test")

    async def call(method: str, args: list[Any]) -> Any:
        return await link_handled(server, node, method, args)

    async def main() -> None:
        assert await call("NodeProcesses", ["n1"]) == [[(1, 2)]]
        with pytest.raises(DrcError, match="does not fit") as err:
            await call("NodeHello", ["n1", "boot"])  # a bug: the internal error of the bus
        assert err.value.code is Code.CRED_EXTERNAL_FAILURE
        with pytest.raises(DrcError) as err:
            await call("NodeProcesses", [None])
        assert err.value.code is Code.EINVAL and "'node'" in err.value.message
        with pytest.raises(DrcError) as err:
            await call("Acquire", [0])  # a user verb: not on the link
        assert err.value.code is Code.EPROTO

    asyncio.run(main())


def test_every_list_of_verbs_is_derived_from_the_declarations() -> None:
    """Fail-over's exactly-once verbs, the link's grouping, metrics' untimed and changing verbs
    come from the @method traits; a verb's grouping is the same on the bus and on the link."""
    from drc.dispatch import shares_commit
    from drc.link.failover import MUTATING
    from drc.metrics import UNTIMED
    from drc.server.link_exporter import GROUPED, ON_LOOP

    node = exported_methods(NodeVerbs)
    assert {n for n, m in node.items() if m.replay is not None} == MUTATING
    assert {"NodeAcquire", "NodeRelease", "NodeHello"} <= MUTATING
    assert "NodeAccess" not in MUTATING  # idempotent: its reference is its record
    assert "NodeWatch" not in MUTATING and "NodeWatch" in UNTIMED and "NodeWatch" in ON_LOOP
    assert {n for n, m in node.items() if m.grouped} == GROUPED
    for m in node.values():
        assert not (m.grouped and m.frees), m.name  # cleanups follow a free's own commit
        assert m.replay is None or m.mutating, m.name  # exactly-once only what changes state
    server = exported_methods(ServerExports)
    for name, m in server.items():
        twin = node.get(f"Node{name}")
        if twin is not None:
            for frees_may_share in (False, True):
                assert shares_commit(m, frees_may_share) == shares_commit(twin, frees_may_share), (
                    name
                )
