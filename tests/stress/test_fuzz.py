"""Fuzzing the inputs drc takes from outside: DRC link frames and requests (DRCS), D-Bus calls
to DRCC, config files. (DRCS's D-Bus methods: tests/integration/test_bad_input.py; tokens:
tests/core/test_tokens.py.) Every rejected input gets a deliberate DRC error (never the
"internal error" a crash in a handler becomes), the daemons live on, and nothing changes.
Sizes: small under ``make test``, the issue's >= 100,000 cases in all under ``make stress``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drc import config as drc_config
from drc.address import split_host_port
from drc.core.errors import Code, DrcError
from drc.link import SyncLinkClient
from drc.node.exports import BUS_NAME as NODE_BUS
from drc.node.exports import INTERFACE as NODE_INTERFACE
from drc.node.exports import OBJECT_PATH as NODE_PATH

from cluster import Cluster, start_cluster, stop_cluster
from scale import fuzzed, size

SETTINGS = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
}
#: The node verbs the DRC link serves, and the JSON types their arguments must have.
LINK_VERBS = {
    "NodeHello": ("s", "s"),
    "NodeConnect": ("s", "s", "s"),
    "NodeConnectFeed": ("s", "s", "s", "u"),
    "NodeAcquire": ("a{sv}", "u"),
    "NodeAccess": ("a{sv}", "u"),
    "NodeGrant": ("a{sv}", "u", "u", "u"),
    "NodeRevoke": ("a{sv}", "u", "u", "u"),
    "NodeRelease": ("a{sv}", "u"),
    "NodeToken": ("a{sv}", "u"),
    "NodeTokenReferences": ("s", "aa{sv}"),
    "NodeJobsEnded": ("s", "au"),
    "NodeProcessesExited": ("s", "a(ut)"),
    "NodeProcesses": ("s",),
    "NodeEpochs": ("s", "au"),
    "NodeJobCredential": ("a{sv}",),
    "NodeWatch": ("s", "u", "u"),
}
REJECTED = {
    Code.EINVAL,
    Code.EFLAGS,
    Code.EBADTARGET,
    Code.EPROTO,
    Code.EPERM,
    Code.CRED_NOT_FOUND,
    Code.BAD_TOKEN,
    Code.ENOSPC,
}
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


def _wrong_for(kind: str) -> st.SearchStrategy:
    """A JSON value that is not of D-Bus type ``kind`` (or is out of its range)."""
    if kind == "s":
        return JSON.filter(lambda v: not isinstance(v, str))
    if kind == "u":
        return JSON.filter(
            lambda v: isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32
        ) | st.sampled_from([-1, 2**32, 2**64])
    if kind == "a{sv}":
        bad_caller = st.fixed_dictionaries(
            {"uid": st.integers(0, 2**32 - 1), "gid": st.integers(0, 2**32 - 1)},
            optional={"job": _wrong_for("u"), "node": _wrong_for("s"), "gids": JSON},
        )  # no job/pid, or a bad one, or no node: never a valid caller
        return JSON.filter(lambda v: not isinstance(v, dict)) | bad_caller
    # lists: not a list, or a list holding one wrong element
    return JSON.filter(lambda v: not isinstance(v, list)) | st.lists(
        st.sampled_from(["x", -5, None, 2**40, 1.5, {"a": 1}]), min_size=1, max_size=3
    )


@st.composite
def bad_link_request(draw) -> tuple[str, list]:
    """A node verb with the wrong number of arguments, or one argument of the wrong type."""
    method = draw(st.sampled_from(sorted(LINK_VERBS)) | st.text(max_size=30))
    kinds = LINK_VERBS.get(method)
    if kinds is None or (draw(st.booleans()) and draw(st.booleans())):
        args = draw(st.lists(JSON, max_size=5))
        if kinds is not None and len(args) == len(kinds):
            args.append(None)
        return method, args
    position = draw(st.integers(0, len(kinds) - 1))
    args = [
        draw(_wrong_for(kind)) if i == position else _valid_example(kind)
        for i, kind in enumerate(kinds)
    ]
    return method, args


def _valid_example(kind: str) -> object:
    return {
        "s": "fuzz-node",
        "u": 99_999,
        "a{sv}": {"uid": 2001, "gid": 2001, "job": 5, "node": "n"},
    }.get(kind, [])


@pytest.fixture(scope="module")
def live(runtime) -> Iterator[Cluster]:
    if os.geteuid() != 0:
        pytest.skip("runs DRCS and DRCC as root on a private bus")
    cluster = start_cluster(runtime)
    try:
        yield cluster
    finally:
        stop_cluster(cluster)


@pytest.fixture(scope="module")
def link(live: Cluster) -> Iterator[tuple[SyncLinkClient, tuple[str, int]]]:
    from drc.link import Munge

    cfg = drc_config.load(live.emb.config)
    host, port = split_host_port(cfg["link"]["listen"], "[link] listen")
    client = SyncLinkClient(
        host, port, munge=Munge(cfg["link"]["munge_socket"] or None), server_uid=0, timeout=10
    )
    try:
        yield client, (host, port)
    finally:
        client.close()


def state(cluster: Cluster) -> tuple:
    """Everything a rejected input must leave alone, as DRCS and DRCC report it."""
    proxy = cluster.server()
    try:
        return proxy.list(), proxy.limits(), proxy.outstanding_jobs()
    finally:
        proxy.close()


def alive(cluster: Cluster) -> None:
    for pid in (cluster.drcs_pid, cluster.drcc_pid):
        assert os.waitpid(pid, os.WNOHANG) == (0, 0), f"daemon {pid} died"


@settings(max_examples=size(150, 15_000), **SETTINGS)
@given(request=bad_link_request())
def test_bad_link_requests_get_a_drc_error_and_change_nothing(live, link, request):
    client, _ = link
    method, args = request
    fuzzed("DRC link requests")
    before = state(live)
    try:
        client.call(method, args)
    except DrcError as e:
        assert e.code in REJECTED, e
        assert e.message and "internal error" not in e.message, e
    else:
        # only read-only verbs may answer (e.g. NodeWatch of an unknown generation)
        assert method in ("NodeWatch", "NodeProcesses", "NodeEpochs"), (method, args)
    alive(live)
    assert state(live) == before


FRAMES = st.one_of(
    st.binary(max_size=64),  # not even a length prefix
    st.binary(min_size=1, max_size=300).map(lambda b: struct.pack(">I", len(b)) + b),
    st.text(max_size=300).map(lambda t: b"MUNGE:" + t.encode() + b":"),
    st.sampled_from([b"\0\0\0\0", b"\xff\xff\xff\xff", struct.pack(">I", (1 << 20) + 1)]),
)


@settings(max_examples=size(150, 20_000), **SETTINGS)
@given(frame=FRAMES)
def test_garbage_frames_close_the_connection_and_change_nothing(live, link, frame):
    """Garbage never decodes as a MUNGE credential: DRCS closes that connection only."""
    _, address = link
    fuzzed("DRC link frames")
    if frame.startswith(b"MUNGE:"):  # a well-formed frame around a forged credential
        frame = struct.pack(">I", len(frame)) + frame
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(frame)
        sock.shutdown(socket.SHUT_WR)
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
    assert answer == b"", "DRCS answered a garbage frame"
    alive(live)


def test_garbage_frames_left_state_and_the_link_intact(live, link):
    """After the garbage, a real node verb still works over the same link, state unchanged."""
    client, _ = link
    before = state(live)
    assert client.call("NodeProcesses", ["fuzz-node"]) == [[]]
    assert state(live) == before


NODE_MEMBERS = [
    "Acquire",
    "Access",
    "AccessWithToken",
    "GetCredentialToken",
    "Grant",
    "Revoke",
    "Release",
    "ReleaseLocal",
    "GetWlmId",
    "WhoAmI",
    "Counters",
    "JobCredential",
]
U32 = st.integers(0, 2**32 - 1)
DBUS_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=200
)
MISSING = st.integers(100_000, 2**32 - 1)
ANY_ARG = st.one_of(
    st.tuples(st.just("u"), U32),
    st.tuples(st.just("s"), DBUS_TEXT),
    st.tuples(st.just("t"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("as"), st.lists(DBUS_TEXT, max_size=3)),
)
GOOD_SIGNATURES = {"u", "uu", "su", "uuu", ""}


def node_call_strategy() -> st.SearchStrategy:
    return st.one_of(
        st.tuples(
            st.just("Acquire"),
            st.just("u"),
            st.tuples(U32.filter(lambda f: f & ~0b11)),
        ),
        st.tuples(st.sampled_from(["Access"]), st.just("uu"), st.tuples(MISSING, st.just(0))),
        st.tuples(st.just("Access"), st.just("uu"), st.tuples(U32, st.integers(1, 2**32 - 1))),
        st.tuples(
            st.just("AccessWithToken"),
            st.just("su"),
            st.tuples(DBUS_TEXT | st.just("drc1.AAAA.BBBB"), st.just(0)),
        ),
        st.tuples(st.sampled_from(["GetCredentialToken"]), st.just("u"), st.tuples(MISSING)),
        st.tuples(
            st.sampled_from(["Grant", "Revoke"]),
            st.just("uuu"),
            st.tuples(MISSING, U32, st.sampled_from([4, 8, 16])),
        ),
        st.tuples(
            st.sampled_from(["Grant", "Revoke"]),
            st.just("uuu"),
            st.tuples(U32, U32, U32.filter(lambda f: bin(f & 0b11100).count("1") != 1)),
        ),
        st.tuples(st.just("Release"), st.just("uu"), st.tuples(MISSING, U32)),
        st.tuples(st.sampled_from(NODE_MEMBERS), st.lists(ANY_ARG, min_size=1, max_size=3))
        .map(lambda m: (m[0], "".join(a[0] for a in m[1]), tuple(a[1] for a in m[1])))
        .filter(lambda c: c[1] not in GOOD_SIGNATURES),
    )


@settings(max_examples=size(100, 10_000), **SETTINGS)
@given(call=node_call_strategy())
def test_bad_calls_to_drcc_get_a_drc_error_and_change_nothing(live, call):
    from drc.bus import SyncBusClient

    member, signature, args = call
    fuzzed("DRCC D-Bus methods")
    before = state(live)
    with SyncBusClient(live.address) as bus, pytest.raises(DrcError) as err:
        bus.call(NODE_BUS, NODE_PATH, NODE_INTERFACE, member, signature, list(args))
    assert err.value.code in REJECTED, err.value
    assert err.value.message and "internal error" not in err.value.message
    alive(live)
    assert state(live) == before


TOML_VALUE = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "").replace('"', "") + '"'),
    st.sampled_from(["true", "false", "[]", "[1, 2]", '["a"]', "{}", "1.5", "nan", "0x10"]),
)
SECTIONS = [*drc_config.SCHEMA, "bogus", ""]


@st.composite
def config_text(draw) -> str:
    """TOML-ish text: real sections and keys with values of any type, or plain garbage."""
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=300))
    lines = []
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.sampled_from(SECTIONS))
        lines.append(f"[{section}]")
        keys = [*drc_config.SCHEMA.get(section, {}), "nonsense"]
        for _ in range(draw(st.integers(0, 4))):
            lines.append(f"{draw(st.sampled_from(keys))} = {draw(TOML_VALUE)}")
    return "\n".join(lines) + "\n"


@settings(max_examples=size(200, 20_000), **SETTINGS)
@given(text=config_text())
def test_any_config_file_loads_or_fails_with_one_config_error(tmp_path_factory, text):
    path = Path(tmp_path_factory.getbasetemp()) / "fuzz.conf"
    path.write_text(text)
    fuzzed("config files")
    try:
        cfg = drc_config.load(path)
    except drc_config.ConfigError as e:
        assert str(e).startswith(str(path)), e  # names the file, for the admin
        assert "\n" not in str(e).strip() or "TOML" in str(e)
    else:
        # what loaded is usable: the derived settings either work or say what is wrong
        for derive in (cfg.admin_gids, cfg.persistent_uids, cfg.persistent_gids):
            with contextlib.suppress(drc_config.ConfigError):
                derive()
