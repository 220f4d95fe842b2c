"""Every outage class gives the message that names the component to look at, to the Python
client and to libdrc alike: deadlines nest, so whoever gives up first knows why.

One embedded cluster whose DRCC lists two servers: the real DRCS and a socket that accepts
connections and never answers (a wedged DRCS, a port squatted by something else). [link]
timeout is 2 s, the clients keep their default 10 s: a DRCS outage must come back as DRCC's
answer within about 2 s, never as the client's own timeout blaming a healthy DRCC.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from clib.support import CLib, spawn_as

from drc.core.errors import Code
from drc.embedded.polling import free_port, wait_for
from drc.embedded.processes import alive
from drc.embedded.runtime import Runtime

from cluster import Cluster, User, start_cluster, stop_cluster

LINK_TIMEOUT = 2  # [link] timeout here: DRCC's whole budget for DRCS per request
SHORT_MS = 1500  # client deadline for the cases where DRCC itself is hung (keeps them fast)

PROBE = """
import sys, time
from drc import client
if len(sys.argv) > 1:
    client.set_timeout(float(sys.argv[1]))
t = time.monotonic()
try:
    client.acquire(0)
    print("ok", 0)
except client.DrcError as e:
    print(e.name, round(time.monotonic() - t, 2))
    print(e.message)
"""


@pytest.fixture
def silent() -> Iterator[str]:
    """host:port of a listening socket that never accepts or answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@pytest.fixture
def two_servers(runtime: Runtime, users: dict[str, User], silent: str) -> Iterator[Cluster]:
    def configure(path: Path) -> None:
        text = path.read_text().replace("[link]\n", f"[link]\ntimeout = {LINK_TIMEOUT}\n", 1)
        found = re.search(r"^servers = (.*)$", text, re.M)
        assert found, text
        servers = [*json.loads(found.group(1)), silent]
        path.write_text(text.replace(found.group(0), f"servers = {json.dumps(servers)}"))

    c = start_cluster(runtime, configure)
    try:
        yield c
    finally:
        for pid in (c.drcs_pid, c.drcc_pid):  # a stopped daemon must still get its SIGTERM
            if pid > 0 and alive(pid):
                os.kill(pid, signal.SIGCONT)
        stop_cluster(c)


def probe(cluster: Cluster, clib: CLib, client: Path, client_ms: int | None = None):
    """(python, c): each (DRC name, seconds, message) of one Acquire that cannot succeed, made
    by drc.client and by libdrc side by side as alice."""
    py_args = [] if client_ms is None else [str(client_ms / 1000)]
    env = {} if client_ms is None else {"DRC_TIMEOUT_MS": str(client_ms)}
    py = spawn_as(cluster, "alice", ["/usr/bin/python3", "-c", PROBE, *py_args], {})
    started = time.monotonic()
    c = spawn_as(cluster, "alice", [str(client), "serve", "1002"], {**clib.env(), **env})
    try:
        c_out, c_err = c.communicate(timeout=30)
        c_took = time.monotonic() - started
        py_out, py_err = py.communicate(timeout=30)
    finally:
        for proc in (py, c):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    lines = py_out.splitlines()
    assert len(lines) == 2, f"python probe: {py_out!r} {py_err!r}"
    name, took = lines[0].split()
    assert c.returncode == Code.ECONNREFUSED, (c_out, c_err)
    detail = next(line for line in c_err.splitlines() if line.startswith("detail: "))
    return (name, float(took), lines[1]), ("DRC_ECONNREFUSED", c_took, detail)


def test_each_outage_names_the_component_to_look_at(
    two_servers: Cluster, clib: CLib, client: Path, silent: str
) -> None:
    c = two_servers
    real = json.loads(re.search(r"^servers = (.*)$", c.emb.config.read_text(), re.M)[1])[0]

    # DRCC hung: only the client's own deadline can answer, and it blames DRCC, rightly.
    os.kill(c.drcc_pid, signal.SIGSTOP)
    try:
        py, cc = probe(c, clib, client, SHORT_MS)
    finally:
        os.kill(c.drcc_pid, signal.SIGCONT)
    for name, took, message in (py, cc):
        assert name == "DRC_ECONNREFUSED"
        assert SHORT_MS / 1000 - 0.2 <= took < SHORT_MS / 1000 + 1.5, (took, message)
        assert "hung or overloaded" in message and "systemctl status drcc.service" in message
        assert "systemctl start" not in message  # it is running: starting it fixes nothing

    # DRCS hung (SIGSTOP: its connections stay open), the other server silent: DRCC answers,
    # well before the clients' 10 s, and points at DRCS.
    os.kill(c.drcs_pid, signal.SIGSTOP)
    try:
        py, cc = probe(c, clib, client)
    finally:
        os.kill(c.drcs_pid, signal.SIGCONT)
    for name, took, message in (py, cc):
        assert name == "DRC_ECONNREFUSED"
        assert took < LINK_TIMEOUT + 1.5, (took, message)
        assert "drcc could not reach DRCS: no DRCS answered within" in message, message
        assert f"{silent}: no answer within" in message, message
        assert "check drcs.service on 127.0.0.1" in message, message
        assert "drcc.service" not in message

    # DRCS stopped: the real server refuses, the squatted port says nothing.
    os.kill(c.drcs_pid, signal.SIGKILL)
    wait_for(lambda: not alive(c.drcs_pid), 10, what="drcs to die", interval=0.02)
    py, cc = probe(c, clib, client)
    for name, took, message in (py, cc):
        assert name == "DRC_ECONNREFUSED"
        assert took < LINK_TIMEOUT + 1.5, (took, message)
        assert f"{real}: connection refused" in message, message
        assert f"{silent}: no answer within" in message, message
        assert "check drcs.service" in message and "drcc.service" not in message

    # DRCC stopped: the bus answers at once that nobody owns org.drc.Node.
    os.kill(c.drcc_pid, signal.SIGKILL)
    wait_for(lambda: not alive(c.drcc_pid), 10, what="drcc to die", interval=0.02)
    py, cc = probe(c, clib, client)
    for name, took, message in (py, cc):
        assert name == "DRC_ECONNREFUSED"
        assert took < 2.0, (took, message)
        assert "not running" in message and "systemctl start drcc.service" in message, message
