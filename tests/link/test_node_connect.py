"""NodeConnect on DRCS: a DRCC's hello, the DRCS it follows and the change feed's position in
one round trip and one transaction (the connect storm of a whole cluster, issue 22)."""

from __future__ import annotations

import asyncio

from drc.core.service import CredentialService
from drc.export import PeerCredentials
from drc.server.exports import ServerExports

NODE_DAEMON = PeerCredentials(uid=0, gids=frozenset({0}), pid=0, sender="link:127.0.0.1:1")


def test_node_connect_says_hello_records_the_drcs_followed_and_where_the_feed_stands(
    service: CredentialService,
):
    exports = ServerExports(service)
    changes = exports.changes
    changes.record("revoked", 7, 2)  # the feed has moved before this node came
    rebooted, generation, seq = exports.nodes.node_connect(
        NODE_DAEMON, "n1", "boot-1", "10.0.0.1:7000"
    )
    assert (rebooted, generation, seq) == (False, changes.generation, 1)
    assert [(n, s) for n, s, _ in service.node_servers()] == [("n1", "10.0.0.1:7000")]

    async def first_poll_parks() -> bool:
        poll = changes.poll(generation, seq, 30)
        await asyncio.sleep(0)
        parked = not poll.done()  # nothing after seq: the first poll waits, not answered
        poll.cancel()
        return parked

    assert asyncio.run(first_poll_parks())


def test_node_connect_with_another_boot_id_is_a_reboot_and_moves_the_follow(
    service: CredentialService,
):
    nodes = ServerExports(service).nodes
    nodes.node_connect(NODE_DAEMON, "n1", "boot-1", "10.0.0.1:7000")
    rebooted, _generation, _seq = nodes.node_connect(NODE_DAEMON, "n1", "boot-2", "10.0.0.2:7000")
    assert rebooted
    assert [(n, s) for n, s, _ in service.node_servers()] == [("n1", "10.0.0.2:7000")]
    nodes.node_follow(NODE_DAEMON, "n1", "10.0.0.2:7000")  # the same: nothing to write
    assert [(n, s) for n, s, _ in service.node_servers()] == [("n1", "10.0.0.2:7000")]
