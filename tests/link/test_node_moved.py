"""NodeMoved on DRCS: a node that failed over records the DRCS it follows, resyncs the
epochs of its credentials and learns where the change feed stands, in one round trip and one
transaction (a fail-over of thousands of nodes, issue 22). DRCC's side, and its fall-back
to a DRCS without NodeMoved, are in tests/node/test_node_service.py."""

from __future__ import annotations

import asyncio

import pytest

from drc.core.errors import Code, DrcError
from drc.core.model import FREED, Target, TargetKind
from drc.core.service import CredentialService
from drc.export import PeerCredentials
from drc.server.exports import ServerExports

from helpers import ALICE, BOB, in_job

NODE_DAEMON = PeerCredentials(uid=0, gids=frozenset({0}), pid=0, sender="link:127.0.0.1:1")
MOVED_TO = "10.0.0.2:7000"


def revoke_a_grant(service: CredentialService, credential: int) -> None:
    """A change the feed carries: the credential's epoch goes up."""
    bob = Target(TargetKind.UID, BOB)
    service.grant(in_job(ALICE, 10), credential, bob)
    service.revoke(in_job(ALICE, 10), credential, bob)


def test_node_moved_records_the_follow_and_answers_the_epochs_and_the_feed_position(
    service: CredentialService,
):
    exports = ServerExports(service)
    live = service.acquire(in_job(ALICE, 10), 0).id
    gone = service.acquire(in_job(ALICE, 10), 0).id
    revoke_a_grant(service, live)  # revoked while the node followed another DRCS
    service.release(in_job(ALICE, 10), gone)  # freed meanwhile
    epoch = service.epochs([live])[live]
    assert epoch > 0
    generation, seq, epochs = exports.nodes.node_moved(NODE_DAEMON, "n1", MOVED_TO, [live, gone])
    assert (generation, seq) == (exports.changes.generation, exports.changes.seq)
    assert epochs == [(live, epoch), (gone, FREED)]
    assert [(n, s) for n, s, _ in service.node_servers()] == [("n1", MOVED_TO)]


def test_a_change_committed_after_node_moved_reaches_the_node_s_first_poll(
    service: CredentialService,
):
    """The position is read before the epochs: what the epochs missed comes after it."""
    exports = ServerExports(service)
    cred = service.acquire(in_job(ALICE, 10), 0).id

    async def first_poll() -> tuple[bool, tuple]:
        generation, seq, _ = exports.nodes.node_moved(NODE_DAEMON, "n1", MOVED_TO, [cred])
        poll = exports.nodes.node_watch(NODE_DAEMON, generation, seq, 30)
        await asyncio.sleep(0)
        parked = not poll.done()  # nothing after the position: the poll waits
        revoke_a_grant(service, cred)
        return parked, await asyncio.wait_for(poll, 10)

    parked, (generation, complete, _seq, changes) = asyncio.run(first_poll())
    assert parked
    assert generation == exports.changes.generation and complete
    assert changes == [(cred, service.epochs([cred])[cred])]


def test_node_moved_is_for_node_daemons_and_bounded(service: CredentialService):
    nodes = ServerExports(service).nodes
    alice = PeerCredentials(uid=ALICE, gids=frozenset(), pid=0, sender="link:127.0.0.1:2")
    with pytest.raises(DrcError, match="not a DRC node daemon"):
        nodes.node_moved(alice, "n1", MOVED_TO, [])
    with pytest.raises(DrcError, match="at most 10000 credentials"):
        nodes.node_moved(NODE_DAEMON, "n1", MOVED_TO, list(range(1, 10_002)))
    assert service.node_servers() == []  # neither recorded a follow


def test_node_moved_refuses_bad_input_and_records_nothing(service: CredentialService):
    nodes = ServerExports(service).nodes
    for node, server, creds in (
        ("n1", "", []),
        ("", MOVED_TO, []),
        ("n1", MOVED_TO, [-1]),
        ("n1", MOVED_TO, [1 << 32]),
    ):
        with pytest.raises(DrcError) as e:
            nodes.node_moved(NODE_DAEMON, node, server, creds)
        assert e.value.code is Code.EINVAL, (node, server, creds)
    assert service.node_servers() == []
