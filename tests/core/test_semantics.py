"""DESIGN section 3, rule by rule, against the core over a real SQLite store."""

from __future__ import annotations

import pytest

from drc.core.errors import Code, DrcError
from drc.core.model import Flags, LimitScope, State, Target, TargetKind
from drc.core.policy import Policy
from drc.core.service import CredentialService

from helpers import ALICE, BOB, CAROL, ROOT, STAFF, direct, in_job, in_process

FLEX = int(Flags.FLEX_CREDENTIAL)
PERSISTENT = int(Flags.PERSISTENT)


def uid(n: int) -> Target:
    return Target(TargetKind.UID, n)


def refused(code: Code):
    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(DrcError)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            handled = self.cm.__exit__(*exc)
            assert self.info.value.code is code, self.info.value
            return handled

    return _Ctx()


# -- acquire -----------------------------------------------------------------------------


def test_acquire_allocates_cookie_and_takes_owner_reference(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    assert cred.resources.cookie1 == 1000 and cred.resources.ptag == 7
    assert (cred.uid, cred.gid, cred.wlm, cred.refs) == (ALICE, ALICE, 10, 1)
    assert cred.state is State.ACTIVE


def test_acquire_rejects_unknown_flags_and_changes_nothing(service: CredentialService):
    for flags in (Flags.TARGET_UID, 1 << 7):  # flags drc does not know: retrying cannot help
        with refused(Code.EFLAGS):
            service.acquire(in_job(ALICE, 10), int(flags))
    for flags in (-1, 2**32):  # not a uint32 at all (cannot come over D-Bus or from C)
        with refused(Code.EINVAL):
            service.acquire(in_job(ALICE, 10), flags)
    assert service.list(ROOT) == []


def test_credential_ids_are_never_reused(service: CredentialService):
    first = service.acquire(direct(ALICE), 0).id
    service.release(direct(ALICE), first)
    assert service.acquire(direct(ALICE), 0).id > first


def test_transient_credential_ends_with_its_job(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    assert service.expire_jobs([10]) == [cred.id]
    with refused(Code.CRED_NOT_FOUND):
        service.get(ROOT, cred.id)


def test_transient_credential_outside_a_job_ends_with_its_process(service):
    cred = service.acquire(in_process(ALICE, pid=4242), 0)
    assert service.processes_exited("n1", [(4242, 100)]) == [cred.id]


def test_drccli_acquire_is_pinned_until_release(service: CredentialService):
    cred = service.acquire(direct(ALICE), 0)
    service.expire_jobs([1, 2, 3])
    assert service.get(ROOT, cred.id).refs == 1
    assert service.release(direct(ALICE), cred.id) is True


# -- limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "target", "caller_args"),
    [
        (LimitScope.GLOBAL, 0, {}),
        (LimitScope.USER_DEFAULT, 0, {}),
        (LimitScope.GROUP_DEFAULT, 0, {}),
        (LimitScope.JOB_DEFAULT, 0, {}),
        (LimitScope.UID, ALICE, {}),
        (LimitScope.GID, ALICE, {}),
        (LimitScope.JOB, 10, {}),
    ],
)
def test_each_limit_is_enforced(service: CredentialService, scope, target, caller_args):
    service.set_limit(ROOT, scope, target, 2)
    alice = in_job(ALICE, 10)
    service.acquire(alice, 0)
    service.acquire(alice, 0)
    with refused(Code.ENOSPC) as err:
        service.acquire(alice, 0)
    assert scope.value in err.value.message
    assert len(service.list(ROOT)) == 2


def test_limits_are_independent_a_specific_limit_does_not_lift_a_default(service):
    service.set_limit(ROOT, LimitScope.USER_DEFAULT, 0, 1)
    service.set_limit(ROOT, LimitScope.UID, ALICE, 5)
    service.acquire(direct(ALICE), 0)
    with refused(Code.ENOSPC):
        service.acquire(direct(ALICE), 0)


def test_limits_count_only_their_own_scope(service: CredentialService):
    service.set_limit(ROOT, LimitScope.UID, ALICE, 1)
    service.set_limit(ROOT, LimitScope.JOB, 10, 1)
    service.acquire(in_job(ALICE, 11), 0)
    service.acquire(in_job(BOB, 10), 0)  # bob is not alice; job 10 is still free
    with refused(Code.ENOSPC):
        service.acquire(in_job(ALICE, 12), 0)  # uid limit
    with refused(Code.ENOSPC):
        service.acquire(in_job(CAROL, 10), 0)  # job limit


def test_only_admins_set_limits_and_none_removes(service: CredentialService):
    with refused(Code.EPERM):
        service.set_limit(direct(ALICE), LimitScope.GLOBAL, 0, 0)
    service.set_limit(ROOT, LimitScope.GLOBAL, 0, 0)
    with refused(Code.ENOSPC):
        service.acquire(direct(ALICE), 0)
    service.set_limit(ROOT, LimitScope.GLOBAL, 0, None)
    service.acquire(direct(ALICE), 0)


def test_pool_exhaustion_is_enospc_and_a_freed_cookie_is_reused(store):
    from drc.providers.pool import PoolProvider

    svc = CredentialService(store, PoolProvider(cookie_min=50, cookie_max=52, cookie_stride=1))
    ids = [svc.acquire(direct(ALICE), 0).id for _ in range(3)]
    with refused(Code.ENOSPC):
        svc.acquire(direct(ALICE), 0)
    svc.release(direct(ALICE), ids[1])
    assert svc.acquire(direct(ALICE), 0).resources.cookie1 == 51


# -- grant / revoke ----------------------------------------------------------------------


def test_only_the_owner_or_root_may_grant(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    with refused(Code.EPERM):
        service.grant(in_job(BOB, 20), cred.id, uid(BOB))
    service.grant(ROOT, cred.id, uid(BOB))
    service.grant(in_job(ALICE, 10), cred.id, uid(CAROL))


def test_granting_twice_is_already_granted(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    with refused(Code.ALREADY_GRANTED):
        service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    assert service.get(ROOT, cred.id).grants == (uid(BOB),)


def test_grant_target_flags_must_name_exactly_one_kind():
    for target, flags, code in (
        (1, 0, Code.EFLAGS),
        (1, int(Flags.TARGET_UID | Flags.TARGET_GID), Code.EFLAGS),
        (1, int(Flags.PERSISTENT), Code.EFLAGS),
        (0, int(Flags.TARGET_WLM), Code.EBADTARGET),  # the peer ran outside any job
        (2**32 - 1, int(Flags.TARGET_UID), Code.EBADTARGET),
    ):
        with refused(code):
            Target.from_flags(target, flags)


def test_grant_of_unknown_credential_is_not_found(service: CredentialService):
    with refused(Code.CRED_NOT_FOUND):
        service.grant(ROOT, 999, uid(BOB))


def test_revoke_blocks_new_access_but_keeps_references(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    service.grant(in_job(ALICE, 10), cred.id, uid(CAROL))
    service.access(in_job(BOB, 20, node="n2"), cred.id)
    service.revoke(in_job(ALICE, 10), cred.id, uid(BOB))
    service.revoke(in_job(ALICE, 10), cred.id, uid(CAROL))
    assert service.get(ROOT, cred.id).refs == 2
    assert service.get(ROOT, cred.id).epoch == 2
    service.access(in_job(BOB, 20, node="n2"), cred.id)  # bob's reference stays valid
    with refused(Code.EPERM):
        service.access(in_job(CAROL, 30, node="n3"), cred.id)
    with refused(Code.EBADTARGET):
        service.revoke(in_job(ALICE, 10), cred.id, uid(CAROL))


# -- access ------------------------------------------------------------------------------


def test_access_allowed_for_owner_uid_owner_job_and_each_grant_kind(service):
    cred = service.acquire(in_job(ALICE, 10), FLEX)
    owner = in_job(ALICE, 10)
    service.grant(owner, cred.id, uid(BOB))
    service.grant(owner, cred.id, Target(TargetKind.GID, STAFF))
    service.grant(owner, cred.id, Target(TargetKind.WLM, 77))
    info = service.access(in_job(ALICE, 11), cred.id)  # owner uid, another job
    assert info.cookie1 == cred.resources.cookie1
    service.access(in_job(BOB, 20), cred.id)  # granted uid
    service.access(in_job(4000, 21, gid=4000, gids=frozenset({STAFF})), cred.id)  # a gid
    service.access(in_job(CAROL, 77), cred.id)  # granted job
    with refused(Code.EPERM):
        service.access(in_job(CAROL, 78), cred.id)
    assert service.get(ROOT, cred.id).refs == 5


def test_access_by_a_stranger_is_refused_and_takes_no_reference(service):
    cred = service.acquire(in_job(ALICE, 10), 0)
    with refused(Code.EPERM):
        service.access(in_job(CAROL, 30, node="n2"), cred.id)
    assert service.get(ROOT, cred.id).refs == 1


def test_access_of_unknown_credential_is_not_found(service: CredentialService):
    with refused(Code.CRED_NOT_FOUND):
        service.access(in_job(ALICE, 10), 12345)


def test_a_reference_is_an_association_not_a_counter(service: CredentialService):
    alice = in_job(ALICE, 10)
    cred = service.acquire(alice, 0)
    service.access(alice, cred.id)
    service.access(alice, cred.id)
    assert service.get(ROOT, cred.id).refs == 1
    service.grant(alice, cred.id, uid(BOB))
    bob = in_job(BOB, 20, node="n2")
    service.access(bob, cred.id)
    service.access(bob, cred.id)
    assert service.get(ROOT, cred.id).refs == 2
    service.release(bob, cred.id)
    assert service.get(ROOT, cred.id).refs == 1


def test_non_flex_credential_serves_one_job_per_node(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10, node="n1"), 0)
    service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    with refused(Code.EPERM) as err:
        service.access(in_job(BOB, 20, node="n1"), cred.id)
    assert "FLEX" in err.value.message
    service.access(in_job(BOB, 20, node="n2"), cred.id)  # another node is fine


def test_flex_credential_is_shared_on_one_node(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10, node="n1"), FLEX)
    service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    service.access(in_job(BOB, 20, node="n1"), cred.id)
    assert service.get(ROOT, cred.id).refs == 2


def test_read_your_writes_access_right_after_acquire_and_grant(service):
    for _ in range(20):
        cred = service.acquire(in_job(ALICE, 10), FLEX)
        service.grant(in_job(ALICE, 10), cred.id, Target(TargetKind.WLM, 20))
        service.access(in_job(BOB, 20), cred.id)  # no retry loop, ever


# -- release -----------------------------------------------------------------------------


def test_any_holder_may_release_its_own_reference(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    service.access(in_job(BOB, 20, node="n2"), cred.id)
    assert service.release(in_job(BOB, 20, node="n2"), cred.id) is False
    assert service.get(ROOT, cred.id).state is State.ACTIVE


def test_a_stranger_without_reference_may_not_release(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    with refused(Code.EPERM):
        service.release(in_job(CAROL, 30), cred.id)


def test_last_reference_frees_the_cookie(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    service.access(in_job(BOB, 20, node="n2"), cred.id)
    assert service.release(in_job(ALICE, 10), cred.id) is False
    assert service.get(ROOT, cred.id).state is State.RELEASED
    assert service.describe()["provider"]["allocated"] == 1
    assert service.release(in_job(BOB, 20, node="n2"), cred.id) is True
    assert service.describe()["provider"]["allocated"] == 0


def test_released_credential_refuses_new_access_and_grants(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    service.access(in_job(BOB, 20, node="n2"), cred.id)
    service.release(in_job(ALICE, 10), cred.id)
    with refused(Code.CRED_NOT_FOUND):
        service.access(in_job(BOB, 21, node="n3"), cred.id)
    with refused(Code.CRED_NOT_FOUND):
        service.grant(in_job(ALICE, 10), cred.id, uid(CAROL))
    service.access(in_job(BOB, 20, node="n2"), cred.id)  # an existing holder still may


def test_release_of_unknown_credential_is_not_found(service: CredentialService):
    with refused(Code.CRED_NOT_FOUND):
        service.release(direct(ALICE), 4321)


# -- persistent --------------------------------------------------------------------------


def test_persistent_survives_job_end_until_owner_release(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), PERSISTENT)
    assert service.expire_jobs([10]) == []
    assert service.get(ROOT, cred.id).state is State.ACTIVE
    service.access(in_job(ALICE, 11), cred.id)  # a later job of the owner
    assert service.release(in_job(ALICE, 11), cred.id) is True


def test_persistent_needs_the_policy(service: CredentialService):
    with refused(Code.EPERM):
        service.acquire(in_job(BOB, 20), PERSISTENT)
    service.acquire(ROOT, PERSISTENT)
    svc = CredentialService(
        service.store, service.provider, Policy(persistent_gids=frozenset({STAFF}))
    )
    svc.acquire(in_job(BOB, 20, gids=frozenset({STAFF})), PERSISTENT)


def test_persistent_survives_a_new_service_over_the_same_store(store, pool):
    cred = CredentialService(store, pool, Policy()).acquire(ROOT, PERSISTENT)
    again = CredentialService(store, pool, Policy())
    assert again.get(ROOT, cred.id).state is State.ACTIVE


# -- expiration and reconciliation -------------------------------------------------------


def test_job_expiration_drops_references_on_every_node_and_is_idempotent(service):
    cred = service.acquire(in_job(ALICE, 10, node="n0"), FLEX)
    for n in range(1, 50):
        service.access(in_job(ALICE, 10, node=f"n{n}"), cred.id)
    assert service.get(ROOT, cred.id).refs == 50
    assert service.expire_jobs([10]) == [cred.id]
    assert service.expire_jobs([10]) == []


def test_owner_job_end_leaves_a_granted_job_its_reference(service):
    cred = service.acquire(in_job(ALICE, 10), FLEX)
    service.grant(in_job(ALICE, 10), cred.id, uid(BOB))
    service.access(in_job(BOB, 20), cred.id)
    assert service.expire_jobs([10]) == []
    assert service.get(ROOT, cred.id).state is State.RELEASED
    assert service.expire_jobs([20]) == [cred.id]


def test_node_reboot_drops_that_nodes_references_only(service: CredentialService):
    a = service.acquire(in_job(ALICE, 10, node="n1"), FLEX)
    service.access(in_job(ALICE, 10, node="n2"), a.id)
    b = service.acquire(direct(ALICE), 0)  # pins live on no node
    assert service.node_rebooted("n1") == []
    assert service.node_rebooted("n2") == [a.id]
    assert service.get(ROOT, b.id).refs == 1


def test_a_hello_tells_a_reboot_once_and_records_the_drcs_the_node_follows(
    service: CredentialService,
):
    """One statement on PostgreSQL (the boot id before, the new one, the follow): a first
    hello and the same boot keep the node's references, a new boot drops them once."""
    a = service.acquire(in_job(ALICE, 10, node="n1"), FLEX)
    service.access(in_job(ALICE, 10, node="n2"), a.id)
    assert service.node_hello("n2", "boot-1", server="drcs-a:7") == (False, [])  # first
    assert service.node_hello("n2", "boot-1") == (False, [])  # the same boot, no server
    with service.store.snapshot() as tx:
        assert [(node, server) for node, server, _ in tx.node_servers()] == [("n2", "drcs-a:7")]
        (since,) = [since for _node, _server, since in tx.node_servers()]
    assert service.node_hello("n2", "boot-1", server="drcs-a:7") == (False, [])
    with service.store.snapshot() as tx:  # not written again: it did not change
        assert [since for _node, _server, since in tx.node_servers()] == [since]
    assert service.get(ROOT, a.id).refs == 2
    assert service.node_hello("n2", "boot-2", server="drcs-b:7") == (True, [])  # rebooted
    assert service.get(ROOT, a.id).refs == 1  # n2's reference went, n1's stays
    assert service.node_hello("n2", "boot-2", server="drcs-b:7") == (False, [])  # told once
    with service.store.snapshot() as tx:
        assert [(node, server) for node, server, _ in tx.node_servers()] == [("n2", "drcs-b:7")]
        assert tx.node_count() == 1
    assert service.node_hello("n1", "boot-9") == (False, [])  # n1's first hello


def test_outstanding_jobs_lists_jobs_holding_references(service: CredentialService):
    service.acquire(in_job(ALICE, 10), 0)
    service.acquire(in_job(BOB, 20), 0)
    service.acquire(direct(CAROL), 0)
    assert service.outstanding_jobs() == {10, 20}
    service.expire_jobs(service.outstanding_jobs() - {20})
    assert service.outstanding_jobs() == {20}


def test_a_jobs_credential_is_the_lowest_a_reference_of_that_job_holds_on_any_node(service):
    """What a multi-node step's --drc=acquire uses on a node where its job took nothing: the
    batch step's acquire recorded the job's reference on the batch host, so every node finds it."""
    lower = service.acquire(in_job(BOB, 20), FLEX).id  # bob's: job 10 holds no reference
    assert service.job_credential(in_job(ALICE, 10, node="n2")) == 0, "holds none yet"
    acquired = service.acquire(in_job(ALICE, 10, node="n1"), FLEX)
    assert service.job_credential(in_job(ALICE, 10, node="n2")) == acquired.id > lower
    service.acquire(in_job(ALICE, 10, node="n1"), FLEX)  # a second one: still the lowest
    assert service.job_credential(in_job(ALICE, 10, node="n3")) == acquired.id
    service.grant(in_job(BOB, 20), lower, Target(TargetKind.WLM, 10))
    service.access(in_job(ALICE, 10, node="n4"), lower)  # one the job accessed counts the same
    assert service.job_credential(in_job(ALICE, 10, node="n2")) == lower
    assert service.job_credential(in_job(BOB, 21)) == 0, "another job holds none"
    assert service.job_credential(in_process(ALICE, pid=4242)) == 0, "no job, no credential"
    assert service.job_credential(direct(ALICE)) == 0
    service.expire_jobs([10])
    assert service.job_credential(in_job(ALICE, 10, node="n2")) == 0, "the job's references went"


def test_a_jobs_credential_is_read_only(service: CredentialService):
    cred = service.acquire(in_job(ALICE, 10), 0)
    before = service.get(ROOT, cred.id)
    service.job_credential(in_job(ALICE, 10, node="n2"))
    assert service.get(ROOT, cred.id) == before
    assert service.holders([cred])[cred.id] == [in_job(ALICE, 10).holder]


# -- visibility --------------------------------------------------------------------------


def test_list_shows_admins_everything_and_users_what_they_may_access(service):
    a = service.acquire(in_job(ALICE, 10), 0)
    b = service.acquire(in_job(BOB, 20), 0)
    service.grant(in_job(ALICE, 10), a.id, uid(CAROL))
    assert [c.id for c in service.list(ROOT)] == [a.id, b.id]
    assert [c.id for c in service.list(direct(CAROL))] == [a.id]
    with refused(Code.CRED_NOT_FOUND):
        service.get(direct(CAROL), b.id)


def test_an_admin_releasing_its_own_reference_leaves_the_owner_alone(service):
    cred = service.acquire(direct(ALICE), FLEX)
    service.access(ROOT, cred.id)
    assert service.get(ROOT, cred.id).refs == 2
    service.release(ROOT, cred.id)  # root's own pin-holder reference only
    assert service.get(ROOT, cred.id).state is State.ACTIVE
    assert service.release(ROOT, cred.id) is True  # now as the admin: ends alice's credential


# -- the audit trail ---------------------------------------------------------------------


def test_every_change_is_one_audit_line_and_every_free_names_its_cookie(
    service: CredentialService, caplog: pytest.LogCaptureFixture
):
    caplog.set_level("INFO", logger="drc.audit")
    kept = service.acquire(in_job(ALICE, 10), 0)
    service.release(in_job(ALICE, 10), kept.id)  # frees: one line says both
    shared = service.acquire(in_job(ALICE, 11), FLEX)
    service.grant(in_job(ALICE, 11), shared.id, uid(BOB))
    service.access(in_job(BOB, 12), shared.id)
    service.release(in_job(BOB, 12), shared.id)  # the owner still holds it: nothing freed
    service.expire_jobs([11])  # frees it: the expire line, and a free line naming the cookie
    lines = [r.getMessage() for r in caplog.records if r.name == "drc.audit"]
    verbs = [line.split()[0] for line in lines]
    assert verbs == [
        "acquire",
        "release",
        "acquire",
        "grant",
        "access",
        "release",
        "free",
        "expire",
    ]
    assert lines[1].endswith(f"freed=True cookie1={kept.resources.cookie1}")
    assert lines[5].endswith("freed=False")
    assert lines[6] == f"free credential={shared.id} cookie1={shared.resources.cookie1}"
    assert lines[7] == f"expire jobs=[11] freed=[{shared.id}]"
