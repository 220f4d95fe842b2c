"""The embedded cluster object's bookkeeping, without starting anything: which bus, config and pid
belong to node k and server k, and that the state file brings them all back."""

from __future__ import annotations

from pathlib import Path

import pytest

from drc.embedded.cluster import Embedded, Host
from drc.embedded.dbusd import PrivateBus


def bus(name: str, pid: int) -> PrivateBus:
    return PrivateBus(f"unix:path=/tmp/{name}.sock", pid, f"/tmp/{name}.sock", f"/tmp/{name}.conf")


@pytest.fixture
def emb(tmp_path: Path) -> Embedded:
    e = Embedded(str(tmp_path), bus("one", 10), drcs_pid=11, drcc_pid=12, node_name="node1")
    e.servers = ["127.0.0.1:7001", "127.0.0.2:7002"]
    e.extra_servers = [Host("server2", bus("s2", 20), "/tmp/s2/drc.conf", 21, e.servers[1])]
    e.extra_nodes = [Host("node2", bus("n2", 30), "/tmp/n2/drc.conf", 31)]
    return e


def test_node_and_server_k_have_their_own_bus_config_and_pid(emb: Embedded) -> None:
    assert [emb.node_bus(k) for k in (1, 2)] == [emb.bus.address, "unix:path=/tmp/n2.sock"]
    assert [emb.server_bus(k) for k in (1, 2)] == [emb.bus.address, "unix:path=/tmp/s2.sock"]
    assert emb.server_config(1) == Path(emb.state_dir) / "drc.conf"
    assert emb.server_config(2) == Path("/tmp/s2/drc.conf")
    assert [emb.server_pid(k) for k in (1, 2)] == [11, 21]
    assert [emb.node_pid(k) for k in (1, 2)] == [12, 31]
    assert emb.node_names()[1:] == ["node2"] and emb.node_count == 2


def test_a_node_or_server_that_does_not_exist_is_named(emb: Embedded) -> None:
    with pytest.raises(RuntimeError, match="there is no node 3: this instance has 2"):
        emb.node_bus(3)
    with pytest.raises(RuntimeError, match="there is no server 3: this instance has 2"):
        emb.server_bus(3)
    with pytest.raises(RuntimeError, match="there is no server 0"):
        emb.server_pid(0)
    with pytest.raises(RuntimeError, match="there is no node 3"):
        emb.node_pid(3)


def test_the_state_file_brings_every_host_back(emb: Embedded) -> None:
    emb.save()
    again = Embedded.load(Path(emb.state_dir))
    assert again == emb
    assert Embedded.load(Path(emb.state_dir) / "nowhere") is None
