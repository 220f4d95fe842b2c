"""Multi-node, multi-server harness: ``drc-embedded start --nodes N --servers M`` (the same
code), driven from tests.

Each node has its own private bus, DRCC, node name (node1..nodeN) and boot id; each DRCS its
own bus and link address on 127.0.0.k; all DRCS share one real PostgreSQL, and every frame of
the DRC link is a real MUNGE credential. Node k follows server k first (round robin). Every
daemon is stopped by pid on leaving :func:`multinode`, even when a test failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from drc.address import split_host_port
from drc.embedded import cluster as embedded
from drc.embedded.main import command_line, python_task, task
from drc.embedded.runtime import Runtime
from drc.link import Munge, SyncLinkClient
from drc.serverclient import ServerProxy
from drc.store.database import open_database
from drc.store.sql import PeeweeStore


@dataclass
class MultiNode:
    state_dir: Path
    emb: embedded.Embedded
    runtime: Runtime
    database: str
    #: every proxy server() handed out, closed (their bus threads stopped) with the cluster
    proxies: list[ServerProxy] = field(default_factory=list, repr=False)

    def embedded(self, *args: str) -> list[str]:
        return command_line(self.runtime.bin / "drc-embedded", self.state_dir, *args)

    def env(self) -> dict[str, str]:
        return {**self.runtime.env(), "DBUS_SYSTEM_BUS_ADDRESS": self.emb.bus.address}

    def run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("timeout", 60)
        return subprocess.run(argv, env=self.env(), capture_output=True, text=True, cwd="/", **kw)

    def task_argv(self, node: int, job: int, user: str, code: str) -> list[str]:
        """Python ``code`` (``client`` imported) as ``user`` in a task of ``job`` on ``node``."""
        program = self.runtime.bin / "drc-embedded"
        return python_task(program, self.state_dir, job, user, code, node=node)

    def task(self, node: int, job: int, user: str, code: str, **kw: Any) -> str:
        """Run the task; its stdout (it must succeed)."""
        done = self.run(self.task_argv(node, job, user, code), **kw)
        assert done.returncode == 0, f"task on node {node} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def drc(self, node: int, job: int, user: str, *args: str) -> subprocess.CompletedProcess[str]:
        """The ``drc`` command as ``user`` in a task of ``job`` on ``node``."""
        argv = [str(self.runtime.bin / "drc"), *args]
        return self.run(
            task(self.runtime.bin / "drc-embedded", self.state_dir, job, user, argv, node)
        )

    def spawn_task(self, node: int, job: int, user: str, code: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.task_argv(node, job, user, code),
            env=self.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd="/",
        )

    def end_job(self, node: int, job: int) -> str:
        done = self.run(self.embedded("end-job", "--node", str(node), str(job)))
        assert done.returncode == 0, done.stderr
        return done.stdout

    def counters(self, node: int) -> dict[str, int]:
        return embedded.node_counters(self.emb.node_bus(node))

    def server_bus(self, k: int) -> str:
        return self.emb.server_bus(k)

    def server(self, k: int = 1) -> ServerProxy:
        """drccli's view of DRCS ``k`` (root, on its own bus)."""
        proxy = ServerProxy(self.server_bus(k))
        self.proxies.append(proxy)
        return proxy

    def config(self, k: int = 1) -> Path:
        return self.emb.server_config(k)

    def kill_server(self, k: int, sig: int = signal.SIGKILL) -> None:
        pid = self.emb.server_pid(k)
        os.kill(pid, sig)
        if sig == signal.SIGKILL:
            embedded.terminate(pid)  # reaps it

    def restart_server(self, k: int) -> None:
        self.emb.start_server(k)

    def link(self, k: int, timeout: float = 5.0) -> SyncLinkClient:
        """A node daemon's link to DRCS ``k`` (root, TCP + MUNGE), for protocol-level tests."""
        host, port = split_host_port(self.emb.servers[k - 1], "server")
        assert self.emb.munged is not None
        return SyncLinkClient(
            host, port, munge=Munge(self.emb.munged.socket), server_uid=0, timeout=timeout
        )

    def store(self) -> PeeweeStore:
        return PeeweeStore(open_database(self.database))


@contextlib.contextmanager
def multinode(runtime: Runtime, database: str, *, nodes: int, servers: int) -> Iterator[MultiNode]:
    """``nodes`` nodes and ``servers`` DRCS on ``database``, stopped (by pid) and their state
    removed on the way out, even when the test fails."""
    state_dir = Path(tempfile.mkdtemp(prefix="drc-multinode-", dir="/tmp"))
    state_dir.chmod(0o755)
    try:
        emb = embedded.start(state_dir, nodes=nodes, servers=servers, database=database)
        cluster = MultiNode(state_dir, emb, runtime, database)
        try:
            yield cluster
        finally:
            for proxy in cluster.proxies:
                proxy.close()
            embedded.stop(state_dir)
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)


def last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


@pytest.fixture
def two_nodes(runtime: Runtime, users: Any, postgresql_url: str) -> Iterator[MultiNode]:
    """Two nodes on one PostgreSQL store: node1 follows DRCS 1 (127.0.0.1), node2 follows
    DRCS 2 (127.0.0.2). ``users`` makes sure the test users exist."""
    with multinode(runtime, postgresql_url, nodes=2, servers=2) as c:
        yield c
