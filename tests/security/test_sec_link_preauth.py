"""The DRC link before authentication, attacked by carol against a real DRCS and munged.

Anyone who reaches DRCS's link port can open connections and send MUNGE frames: carol opens
connections that never send (or send half a frame), floods one address with them, and sends
frames she MUNGE-encoded with a 5,000-digit integer or deep nesting. Each attack must fail
without a traceback in DRCS's log, with DRCS serving its node daemons throughout and nothing
changed in the store.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from drc import config as drc_config
from drc.address import split_host_port
from drc.link import LinkClient, Munge
from drc.link.protocol import HEADER, FrameError, Request, pack_frame
from drc.link.server import (
    AUTH_TIMEOUT,
    MAX_UNAUTHENTICATED_BYTES_PER_HOST,
    MAX_UNAUTHENTICATED_PER_HOST,
)

from cluster import Cluster
from helpers import run_bounded

#: carol's side: connections that never send, the last ``parked`` of them after sending all
#: of a 1 MiB frame but its last byte. Prints how long each took to be closed by DRCS
#: (bounded: 20 s at most).
SILENT = """
import json, select, socket, sys, time
host, port, n, parked = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
socks = [socket.create_connection((host, port)) for _ in range(n)]
for s in socks[-parked:]:  # begin a 1 MiB frame, send all of it but its last byte
    try:
        s.sendall((1 << 20).to_bytes(4, "big") + b"x" * ((1 << 20) - 1))
    except OSError:
        pass  # DRCS closed it already
print("ready", flush=True)
if sys.argv[4] == "wait":
    sys.stdin.readline()
t0, closed, deadline = time.monotonic(), {}, time.monotonic() + 20
while len(closed) < n and time.monotonic() < deadline:
    open_ = [s for s in socks if s.fileno() not in closed]
    for s in select.select(open_, [], [], 0.1)[0]:
        try:
            gone = s.recv(4096) == b""
        except OSError:
            gone = True
        if gone:
            closed[s.fileno()] = time.monotonic() - t0
print(json.dumps(sorted(closed.values())), flush=True)
"""

#: carol's side: one connection per payload, a frame she MUNGE-encoded; prints each answer.
BOMBS = """
import json, socket, sys
from drc.link import Munge
from drc.link.protocol import pack_frame, HEADER
host, port, munge_socket = sys.argv[1], int(sys.argv[2]), sys.argv[3]
munge = Munge(munge_socket)
out = []
for payload in json.loads(sys.stdin.read()):
    s = socket.create_connection((host, port))
    s.settimeout(10)
    s.sendall(pack_frame(munge.encode(payload.encode())))
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    answer = None
    if len(data) >= HEADER.size:
        answer = json.loads(munge.decode(data[HEADER.size:]).payload)
    out.append(answer)  # then DRCS closed the connection
    s.close()
print(json.dumps(out))
"""

BIG_INT = '{"id":7,"method":"NodeAcquire","args":[' + "9" * 5000 + "]}"
DEEP = '{"id":8,"method":"NodeAcquire","args":' + "[" * 50_000 + "]" * 50_000 + "}"


def link_of(cluster: Cluster) -> tuple[str, int, str]:
    cfg = drc_config.load(cluster.emb.config)
    host, port = split_host_port(cfg["link"]["listen"], "[link] listen")
    return host, port, cfg["link"]["munge_socket"]


def drcs_log(cluster: Cluster) -> str:
    return (Path(cluster.state_dir) / "drcs.log").read_text()


def as_carol(script: str, *args: str) -> list[str]:
    return ["runuser", "-u", "carol", "--", "/usr/bin/python3", "-c", script, *args]


def node_daemon_answers(cluster: Cluster) -> dict:
    """A node daemon connecting now is served (ServerInfo over a new MUNGE connection)."""
    host, port, munge_socket = link_of(cluster)

    async def call() -> dict:
        client = LinkClient(host, port, munge=Munge(munge_socket), server_uid=os.getuid())
        try:
            return (await client.call("ServerInfo", []))[0]
        finally:
            await client.close()

    return run_bounded(call(), timeout=30)


def assert_drcs_unharmed(cluster: Cluster, before: list) -> None:
    os.kill(cluster.drcs_pid, 0)  # alive
    assert cluster.server().list() == before  # nothing changed
    text = drcs_log(cluster)
    assert "Traceback" not in text and "RecursionError" not in text, text[-3000:]


def test_connections_that_never_authenticate_are_closed(cluster: Cluster, users) -> None:
    host, port, _ = link_of(cluster)
    before = cluster.server().list()
    r = cluster.run_as(None, as_carol(SILENT, host, str(port), "41", "go", "1"), timeout=60)
    assert r.returncode == 0, r.stderr
    closed = json.loads(r.stdout.splitlines()[-1])
    # every one closed by DRCS (the old link kept them all: 150 of 150 open after 40 s),
    # the half-sent 1 MiB frame too, none before its authentication deadline
    assert len(closed) == 41, closed
    assert min(closed) >= AUTH_TIMEOUT - 1 and max(closed) <= AUTH_TIMEOUT + 3, closed
    assert node_daemon_answers(cluster)["pid"] == cluster.drcs_pid
    assert_drcs_unharmed(cluster, before)
    assert f"41 not authenticated within {AUTH_TIMEOUT} s" in drcs_log(cluster)


def test_a_flood_from_one_address_cannot_lock_node_daemons_out(cluster: Cluster, users) -> None:
    host, port, _ = link_of(cluster)
    before = cluster.server().list()
    flood = MAX_UNAUTHENTICATED_PER_HOST + 88
    carol = cluster.spawn(as_carol(SILENT, host, str(port), str(flood), "wait", "1"))
    try:
        assert carol.stdout.readline().strip() == "ready", carol.stderr.read()
        # from the same address as carol's 600, a node daemon still gets in and is served
        assert node_daemon_answers(cluster)["pid"] == cluster.drcs_pid
        out, err = carol.communicate("\n", timeout=60)
    finally:
        if carol.poll() is None:
            carol.kill()
            carol.wait(10)
    closed = json.loads(out.splitlines()[-1])
    assert len(closed) == flood, err
    # the oldest went at once as newer ones came, the rest at their deadline
    assert sum(t < AUTH_TIMEOUT - 1 for t in closed) >= flood - MAX_UNAUTHENTICATED_PER_HOST
    assert max(closed) <= AUTH_TIMEOUT + 3
    assert_drcs_unharmed(cluster, before)
    assert "pushed out by newer ones from their address" in drcs_log(cluster)


def test_parked_partial_frames_are_capped_per_address(cluster: Cluster, users) -> None:
    host, port, _ = link_of(cluster)
    before = cluster.server().list()
    parked = MAX_UNAUTHENTICATED_BYTES_PER_HOST // (1 << 20) + 4  # 12 MiB against an 8 MiB cap
    r = cluster.run_as(
        None, as_carol(SILENT, host, str(port), str(parked), "go", str(parked)), timeout=60
    )
    assert r.returncode == 0, r.stderr
    closed = json.loads(r.stdout.splitlines()[-1])
    assert len(closed) == parked
    # the oldest went as soon as newer ones brought the address over its cap; DRCS never
    # held more than the cap for carol (the old link held 1 MiB per connection for 30 s)
    assert sum(t < AUTH_TIMEOUT - 1 for t in closed) >= 4, closed
    assert max(closed) <= AUTH_TIMEOUT + 3
    assert node_daemon_answers(cluster)["pid"] == cluster.drcs_pid
    assert_drcs_unharmed(cluster, before)
    assert "over the byte cap" in drcs_log(cluster)


def test_carol_s_munge_bombs_are_refused_before_parsing(cluster: Cluster, users) -> None:
    host, port, munge_socket = link_of(cluster)
    before = cluster.server().list()
    r = subprocess.run(
        as_carol(BOMBS, host, str(port), munge_socket),
        input=json.dumps([BIG_INT, DEEP]),
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert r.returncode == 0, r.stderr
    uid = users["carol"].uid
    refused = {
        "error": "org.drc.Error.EPERM",
        "message": f"DRC link: uid {uid} is not a node daemon",
    }
    assert json.loads(r.stdout) == [{"id": 7, **refused}, {"id": 8, **refused}]
    assert_drcs_unharmed(cluster, before)
    # said once, counted, in the link's summary line (not a line per frame: anyone can send)
    summary = f"2 a frame from uid {uid}, not a node daemon's"
    deadline = time.monotonic() + 5
    while summary not in drcs_log(cluster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert summary in drcs_log(cluster)


@pytest.mark.parametrize("payload", [BIG_INT, DEEP], ids=["5000-digit-int", "deep-nesting"])
def test_a_node_daemon_s_unparsable_frame_is_refused_in_bounds(
    cluster: Cluster, users, payload: str
) -> None:
    """Even from a node daemon's uid the parse is bounded: one warning, the connection
    closed, no traceback."""
    host, port, munge_socket = link_of(cluster)
    before = cluster.server().list()
    with socket.create_connection((host, port), timeout=10) as s:
        s.sendall(pack_frame(Munge(munge_socket).encode(payload.encode())))
        assert s.recv(HEADER.size) == b""  # closed, nothing answered
    assert_drcs_unharmed(cluster, before)
    deadline = time.monotonic() + 5
    while "payload" not in drcs_log(cluster) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ("integer of 5000" if payload is BIG_INT else "deeper than 32") in drcs_log(cluster)


# -- the bounded parse itself (what a node daemon's frame goes through) --------------------------


def request(args: str) -> bytes:
    return b'{"id":1,"method":"X","args":' + args.encode() + b"}"


def test_nesting_is_bounded_exactly_and_brackets_in_strings_do_not_count() -> None:
    assert Request.from_payload(request("[" * 31 + "]" * 31)).id == 1  # 32 deep with the object
    with pytest.raises(FrameError, match="deeper than 32"):
        Request.from_payload(request("[" * 32 + "]" * 32))
    assert Request.from_payload(request('["' + "[{" * 100 + '\\""]')).args == ["[{" * 100 + '"']


def test_integer_literals_are_bounded_before_int_sees_them() -> None:
    assert Request.from_payload(request("[" + "9" * 64 + "]")).args == [int("9" * 64)]
    with pytest.raises(FrameError, match="integer of 65 characters"):
        Request.from_payload(request("[" + "9" * 65 + "]"))


def test_the_depth_check_is_linear_even_for_unterminated_strings() -> None:
    """Half a million quotes that never close: a naive string pattern rescans from each."""
    payload = request("[" * 40 + '"' + '\\"' * 500_000)
    started = time.perf_counter()
    with pytest.raises(FrameError):
        Request.from_payload(payload)
    assert time.perf_counter() - started < 0.5
