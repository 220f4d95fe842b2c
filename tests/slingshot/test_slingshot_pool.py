"""The slingshot provider's VNI pool with the real core and a real SQLite store, in-process.

A fake clock drives the quarantine; node confirmations go through the same node verbs the
DRC link serves (``NodeSlingshotState`` / ``NodeSlingshotCleaned``).
"""

from __future__ import annotations

import pytest

from drc.bus import PeerCredentials
from drc.core.errors import Code, DrcError
from drc.core.model import Flags
from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.providers import make_provider
from drc.providers.slingshot import SlingshotProvider
from drc.server.exports import ServerExports, ServerNodeVerbs
from drc.store.sql import PeeweeStore
from drc.wire import credential_to_wire

from helpers import ALICE, BOB, direct, in_job

NODE_DAEMON = PeerCredentials(uid=0, gids=frozenset({0}), pid=0, sender="link:test")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sling(store: PeeweeStore, clock: Clock) -> tuple[CredentialService, ServerNodeVerbs]:
    provider = SlingshotProvider(
        vni_min=2000, vni_max=2002, quarantine=30, cleanup_retry_interval=600, clock=clock
    )
    service = CredentialService(store, provider, Policy(), clock=clock)
    return service, ServerExports(service).nodes


def _vni(service: CredentialService, cred: int) -> int:
    return service.get(direct(0), cred).resources.cookie1


def test_each_credential_owns_one_vni_round_robin_and_enospc(sling):
    service, _ = sling
    creds = [service.acquire(direct(ALICE), Flags.FLEX_CREDENTIAL).id for _ in range(3)]
    assert [_vni(service, c) for c in creds] == [2000, 2001, 2002]
    with pytest.raises(DrcError) as e:
        service.acquire(direct(BOB), 0)
    assert e.value.code is Code.ENOSPC and "2000..2002" in str(e.value)
    assert credential_to_wire(service.get(direct(0), creds[0]))["vni"] == 2000


def test_a_released_vni_waits_for_every_node_and_the_quarantine(sling, clock):
    service, exports = sling
    cred = service.acquire(in_job(ALICE, 7, node="n1"), Flags.FLEX_CREDENTIAL).id
    service.grant(in_job(ALICE, 7, node="n1"), cred, _uid_target(BOB))
    service.access_credential(in_job(ALICE, 7, node="n1"), cred)
    service.access_credential(in_job(BOB, 8, node="n2"), cred)
    assert exports.node_slingshot_state(NODE_DAEMON, "n2") == ([(cred, 2000)], [])
    others = [service.acquire(direct(ALICE), 0).id for _ in range(2)]  # 2001, 2002 taken
    service.release(direct(ALICE), others[0])  # 2001: never used on a node
    service.expire_jobs([7, 8])
    # 2000 is owed by n1 and n2: pending, in status, not reusable
    pending = service.describe()["pending_cleanups"]
    assert {p["object"] for p in pending} == {"VNI 2000", "VNI 2001"}
    assert exports.node_slingshot_state(NODE_DAEMON, "n1") == ([], [(cred, 2000)])
    clock.now += 31
    service.retry_cleanups()  # 2001 is back (no node owed it); 2000 still owed
    assert _vni(service, service.acquire(direct(BOB), 0).id) == 2001
    with pytest.raises(DrcError) as e:
        service.acquire(direct(BOB), 0)
    assert e.value.code is Code.ENOSPC and "1 waiting for node cleanup" in str(e.value)
    assert exports.node_slingshot_cleaned(NODE_DAEMON, "n1", [cred]) == [cred]
    clock.now += 3600
    service.retry_cleanups()
    assert [p["object"] for p in service.describe()["pending_cleanups"]] == ["VNI 2000"]
    assert "n2" in service.pending_cleanups()[0].last_error
    exports.node_slingshot_cleaned(NODE_DAEMON, "n2", [cred])  # the quarantine starts now
    assert "quarantine" in service.pending_cleanups()[0].last_error
    clock.now += 31
    service.cleanup.release([cred])
    assert service.describe()["pending_cleanups"] == []
    assert _vni(service, service.acquire(direct(BOB), 0).id) == 2000


def test_quarantine_holds_a_vni_after_the_last_confirmation(sling, clock):
    service, exports = sling
    cred = service.acquire(in_job(ALICE, 7, node="n1"), 0).id
    service.access_credential(in_job(ALICE, 7, node="n1"), cred)
    service.expire_jobs([7])
    clock.now += 20  # the release was 20 s ago: the quarantine (30 s) counts from the
    exports.node_slingshot_cleaned(NODE_DAEMON, "n1", [cred])  # last confirmation, not it
    assert "quarantine for 30 more s" in service.pending_cleanups()[0].last_error
    # retried when the quarantine ends at the latest, whatever the backoff has grown to
    assert service.pending_cleanups()[0].next_try <= clock.now + 30
    clock.now += 15
    service.cleanup.release([cred])
    assert "quarantine for 15 more s" in service.pending_cleanups()[0].last_error
    clock.now += 16
    service.cleanup.release([cred])
    assert service.pending_cleanups() == []


def test_a_live_credential_cannot_be_confirmed_and_only_root_node_daemons_ask(sling):
    service, exports = sling
    cred = service.acquire(in_job(ALICE, 7, node="n1"), 0).id
    service.access_credential(in_job(ALICE, 7, node="n1"), cred)
    assert exports.node_slingshot_cleaned(NODE_DAEMON, "n1", [cred]) == []
    carol = PeerCredentials(uid=ALICE, gids=frozenset({ALICE}), pid=1, sender=":1.9")
    for call in (
        lambda: exports.node_slingshot_cleaned(carol, "n1", [cred]),
        lambda: exports.node_slingshot_state(carol, "n1"),
    ):
        with pytest.raises(DrcError) as e:
            call()
        assert e.value.code is Code.EPERM
    with pytest.raises(DrcError) as e:
        exports.node_slingshot_cleaned(NODE_DAEMON, "", [cred])
    assert e.value.code is Code.EINVAL


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"vni_min": 5, "vni_max": 20}, "VNI 1 or 10"),
        ({"vni_min": 3000, "vni_max": 2000}, "vni_min <= vni_max"),
        (
            {"vni_min": 60000, "vni_max": 65535, "slurm_vni_min": 1024, "slurm_vni_max": 61000},
            "overlap Slurm's",
        ),
    ],
)
def test_bad_ranges_are_refused_with_one_line(settings, message):
    with pytest.raises(ValueError, match=message):
        make_provider("slingshot", settings)


def _uid_target(uid: int):
    from drc.core.model import Target, TargetKind

    return Target(TargetKind.UID, uid)
