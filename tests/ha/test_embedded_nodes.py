"""``drc-embedded start --nodes N``: several nodes on one machine, through the command line."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from drc.embedded.cluster import Embedded
from drc.embedded.processes import alive
from drc.embedded.runtime import Runtime

from cluster import User


def test_start_nodes_gives_each_node_its_bus_drcc_name_and_boot_id(
    runtime: Runtime, users: dict[str, User]
):
    state = Path(tempfile.mkdtemp(prefix="drc-embedded-nodes-", dir="/tmp"))
    state.chmod(0o755)
    cli = [str(runtime.bin / "drc-embedded"), "--state-dir", str(state)]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, *args], env=runtime.env(), capture_output=True, text=True, timeout=60, cwd="/"
        )

    emb = None
    try:
        started = run("start", "--nodes", "3")
        assert started.returncode == 0, started.stderr
        assert "nodes: 'node1 node2 node3'" in started.stdout
        emb = Embedded.load(state)
        assert emb is not None and emb.node_names() == ["node1", "node2", "node3"]
        assert len({emb.node_bus(k) for k in (1, 2, 3)}) == 3
        boots = {(state / f"node{k}" / "boot_id").read_text() for k in (2, 3)}
        assert len(boots) == 2
        status = run("status")
        assert status.returncode == 0 and "drcc node3" in status.stdout, status.stdout

        code = "from drc import client; print(client.get_wlm_id(), client.acquire(0))"
        argv = ["--node", "3", "--job", "7", "--user", "alice", "--", "python3", "-c", code]
        task = run("run", *argv)
        assert task.returncode == 0, task.stderr
        job, cred = map(int, task.stdout.split())
        assert job == 7
        ended = run("end-job", "--node", "2", "7").stdout
        assert "ended on node 2; freed credential(s): none" in ended  # node 3 holds it
        assert (
            f"ended on node 3; freed credential(s): {cred}"
            in run("end-job", "--node", "3", "7").stdout
        )
        missing = run("run", "--node", "4", "--job", "7", "--", "true")
        assert missing.returncode == 1 and "there is no node 4" in missing.stderr
    finally:
        stopped = run("stop")
        shutil.rmtree(state, ignore_errors=True)
    assert stopped.returncode == 0
    assert not any(alive(pid) for _, pid in emb.daemons())
