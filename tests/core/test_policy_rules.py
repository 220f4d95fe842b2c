"""The access rules of drc.core.policy, decided without a store (test_semantics.py checks the
same rules through the verbs)."""

from __future__ import annotations

import pytest

from drc.core import policy as rules
from drc.core.errors import Code, DrcError
from drc.core.model import (
    Credential,
    Flags,
    Holder,
    Resources,
    State,
    Target,
    TargetKind,
)
from drc.core.policy import Policy

from helpers import ALICE, BOB, CAROL, ROOT, STAFF, direct, in_job, in_process

ADMINS = 4000
POLICY = Policy(admin_gids=frozenset({ADMINS}))


def cred(
    *,
    uid: int = ALICE,
    job: int = 0,
    flex: bool = False,
    state: State = State.ACTIVE,
    grants: tuple[Target, ...] = (),
) -> Credential:
    return Credential(
        id=7,
        uid=uid,
        gid=uid,
        wlm=job,
        flags=Flags.FLEX_CREDENTIAL if flex else Flags(0),
        state=state,
        resources=Resources("pool", 1000),
        created=0.0,
        grants=grants,
    )


def code_of(call) -> Code:
    with pytest.raises(DrcError) as info:
        call()
    return info.value.code


# -- the ACL -----------------------------------------------------------------------------


def test_owner_admins_and_the_owners_job_may_access_without_a_grant():
    c = cred(job=42)
    assert POLICY.may_access(c, direct(ALICE))
    assert POLICY.may_access(c, ROOT)
    assert POLICY.may_access(c, direct(BOB, gids=frozenset({ADMINS})))
    assert POLICY.may_access(c, in_job(BOB, 42))  # a step of the owner's job run by another
    assert not POLICY.may_access(c, in_job(BOB, 43))
    assert not POLICY.may_access(c, direct(BOB))


@pytest.mark.parametrize(
    ("grant", "caller", "allowed"),
    [
        (Target(TargetKind.UID, BOB), direct(BOB), True),
        (Target(TargetKind.UID, BOB), direct(CAROL), False),
        (Target(TargetKind.GID, STAFF), direct(BOB, gids=frozenset({STAFF})), True),
        (Target(TargetKind.GID, STAFF), direct(CAROL), False),
        (Target(TargetKind.WLM, 99), in_job(CAROL, 99), True),
        (Target(TargetKind.WLM, 99), in_job(CAROL, 98), False),
        # a WLM grant never admits a caller outside any job (job 0)
        (Target(TargetKind.WLM, 0), direct(CAROL), False),
    ],
)
def test_a_grant_admits_its_uid_group_or_job_only(grant, caller, allowed):
    assert POLICY.may_access(cred(grants=(grant,)), caller) is allowed


def test_check_access_refuses_a_released_credential_before_the_acl():
    released = cred(state=State.RELEASED)
    # even the owner: a released credential is gone to newcomers
    assert code_of(lambda: POLICY.check_access(released, direct(ALICE))) is Code.CRED_NOT_FOUND
    assert code_of(lambda: POLICY.check_access(cred(), direct(BOB))) is Code.EPERM
    POLICY.check_access(cred(), direct(ALICE))


def test_only_owner_or_admin_manage_and_a_stranger_learns_no_state():
    released = cred(state=State.RELEASED)
    # the permission comes first: a stranger is told EPERM, not whether it was released
    assert code_of(lambda: POLICY.check_manage(released, direct(BOB), "grant")) is Code.EPERM
    assert code_of(lambda: POLICY.check_manage(released, direct(ALICE), "grant")) is (
        Code.CRED_NOT_FOUND
    )
    with pytest.raises(DrcError, match=r"only the owner \(uid 2001\) or an admin may revoke"):
        POLICY.check_manage(cred(grants=(Target(TargetKind.UID, BOB),)), direct(BOB), "revoke")
    POLICY.check_manage(cred(), ROOT, "grant")


def test_admin_check_names_the_verb():
    with pytest.raises(DrcError, match="only admins may list pins") as info:
        POLICY.check_admin(direct(BOB), "list pins")
    assert info.value.code is Code.EPERM
    POLICY.check_admin(direct(BOB, gids=frozenset({ADMINS})), "list pins")


def test_release_as_owner_owner_always_admin_only_without_its_own_reference():
    c = cred()
    assert POLICY.releases_as_owner(c, direct(ALICE), dropped=True)
    assert POLICY.releases_as_owner(c, direct(ALICE), dropped=False)
    assert POLICY.releases_as_owner(c, ROOT, dropped=False)
    assert not POLICY.releases_as_owner(c, ROOT, dropped=True)
    assert not POLICY.releases_as_owner(c, direct(BOB), dropped=False)


# -- rules without configuration ---------------------------------------------------------


def test_owner_references_are_the_owners_job_and_pin():
    c = cred(job=42)
    assert rules.owned_by_holder(c, Holder.for_job("n1", 42))
    assert rules.owned_by_holder(c, Holder.pin(ALICE))
    assert not rules.owned_by_holder(c, Holder.for_job("n1", 43))
    assert not rules.owned_by_holder(c, Holder.pin(BOB))
    assert not rules.owned_by_holder(c, Holder.for_process("n1", 5, 1))
    # a credential acquired outside a job: no job reference is the owner's, not even job 0's
    assert not rules.owned_by_holder(cred(job=0), Holder.for_job("n1", 0))


def test_a_pin_of_another_users_credential_counts_for_the_pinning_user():
    c = cred()
    assert rules.pins_another_users(c, direct(BOB))
    assert not rules.pins_another_users(c, direct(ALICE))
    assert not rules.pins_another_users(c, in_job(BOB, 3))


def test_one_job_per_node_for_a_non_flex_credential():
    c = cred()
    job3 = in_job(BOB, 3).holder
    with pytest.raises(DrcError, match=r"already used by job 2 on node 'n1'") as info:
        rules.check_node_binding(c, job3, {("job", 2), ("job", 3)})
    assert info.value.code is Code.EPERM
    rules.check_node_binding(c, job3, {("job", 3)})  # its own tenancy
    rules.check_node_binding(c, job3, set())
    process = in_process(BOB, 77).holder
    with pytest.raises(DrcError, match="already used by job 2"):
        rules.check_node_binding(c, process, {("job", 2)})


def test_flex_credentials_and_pins_are_bound_to_no_node():
    flex = cred(flex=True)
    assert not rules.node_bound(flex, Holder.for_job("n1", 3))
    rules.check_node_binding(flex, Holder.for_job("n1", 3), {("job", 2)})
    assert not rules.node_bound(cred(), Holder.pin(BOB))
    rules.check_node_binding(cred(), Holder.pin(BOB), {("job", 2)})
    assert rules.node_bound(cred(), Holder.for_process("n1", 5, 1))
