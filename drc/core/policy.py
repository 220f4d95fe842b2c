"""Who may do what: the access rules of DESIGN section 3, as pure decisions.

:class:`Policy` holds what drc.conf configures (admins, who may create PERSISTENT credentials,
the default per-user limit) and the rules that depend on it: the ACL, who manages a credential,
who releases as its owner. The module functions are the rules that need no configuration: a
released credential takes no newcomer, which references keep a credential ACTIVE, one job per
node for a non-FLEX credential. Nothing here reads the store: the service hands each rule what
it read in the verb's transaction, so every rule can be tested without one.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass

from drc.core.errors import Code, DrcError, eperm
from drc.core.model import (
    Caller,
    Credential,
    Holder,
    HolderKind,
    Limit,
    LimitScope,
    State,
    TargetKind,
)


@dataclass(frozen=True)
class Policy:
    admin_gids: frozenset[int] = frozenset()
    persistent_uids: frozenset[int] = frozenset()
    persistent_gids: frozenset[int] = frozenset()
    #: drc.conf's ``user_limit``: the user-default limit while none is stored (None: none).
    user_limit: int | None = None

    def is_admin(self, caller: Caller) -> bool:
        return caller.uid == 0 or bool(caller.all_gids & self.admin_gids)

    def may_persist(self, caller: Caller) -> bool:
        return (
            self.is_admin(caller)
            or caller.uid in self.persistent_uids
            or bool(caller.all_gids & self.persistent_gids)
        )

    def limits_for(self, caller: Caller, stored: list[Limit]) -> list[Limit]:
        """The limits an acquire by ``caller`` is checked against: the stored ones, plus the
        configured user default when no user-default limit is stored. Root is not bound by
        the configured default: it is trusted with the pool (and may change the config)."""
        if (
            self.user_limit is None
            or caller.uid == 0
            or any(limit.scope is LimitScope.USER_DEFAULT for limit in stored)
        ):
            return stored
        return [*stored, Limit(LimitScope.USER_DEFAULT, 0, self.user_limit)]

    # -- the ACL -------------------------------------------------------------------------

    def may_manage(self, cred: Credential, caller: Caller) -> bool:
        """Grant, revoke: the owner's uid or an admin."""
        return caller.uid == cred.uid or self.is_admin(caller)

    def may_access(self, cred: Credential, caller: Caller) -> bool:
        """The owner, an admin, the owner's job, or a grant to the caller's uid, one of its
        groups or its job. Also who may see the credential (get, list, a token)."""
        if caller.uid == cred.uid or self.is_admin(caller):
            return True
        if caller.job and caller.job == cred.wlm:
            return True
        gids = caller.all_gids
        for grant in cred.grants:
            if (
                (grant.kind is TargetKind.UID and grant.id == caller.uid)
                or (grant.kind is TargetKind.GID and grant.id in gids)
                or (grant.kind is TargetKind.WLM and caller.job and grant.id == caller.job)
            ):
                return True
        return False

    def check_access(self, cred: Credential, caller: Caller) -> None:
        """A new reference: the credential is ACTIVE and the caller is in its ACL."""
        check_active(cred)
        if not self.may_access(cred, caller):
            raise eperm(
                f"uid {caller.uid} (job {caller.job}) is not granted access to credential {cred.id}"
            )

    def check_manage(self, cred: Credential, caller: Caller, verb: str) -> None:
        """A change of the ACL: the caller manages the credential and it is still ACTIVE."""
        if not self.may_manage(cred, caller):
            raise eperm(
                f"only the owner (uid {cred.uid}) or an admin may {verb} credential {cred.id}"
            )
        check_active(cred)

    def check_admin(self, caller: Caller, what: str) -> None:
        """An administrative verb: ``what`` completes "only admins may …"."""
        if not self.is_admin(caller):
            raise eperm(f"uid {caller.uid} is not a DRC admin: only admins may {what}")

    def releases_as_owner(self, cred: Credential, caller: Caller, dropped: bool) -> bool:
        """Whether a release ends the credential for newcomers and drops the owner's pin: the
        owner's always; an admin's only when it held no reference of its own (``dropped``
        False), as ``drccli release ID`` as root; anyone else drops just its reference."""
        return caller.uid == cred.uid or (not dropped and self.is_admin(caller))


def check_active(cred: Credential) -> None:
    """A RELEASED credential takes no new reference or grant: to newcomers it is gone."""
    if cred.state is not State.ACTIVE:
        raise DrcError(Code.CRED_NOT_FOUND, f"credential {cred.id} was released by its owner")


def owned_by_holder(cred: Credential, holder: Holder) -> bool:
    """References of the owner's job or pin keep a transient credential ACTIVE."""
    return (holder.kind is HolderKind.JOB and cred.wlm != 0 and holder.job == cred.wlm) or (
        holder.kind is HolderKind.PIN and holder.uid == cred.uid
    )


def pins_another_users(cred: Credential, caller: Caller) -> bool:
    """A new reference counts against the caller's own limits when it is a pin of another
    user's credential: the pin keeps that credential alive for the pinning user."""
    return caller.holder.kind is HolderKind.PIN and cred.uid != caller.uid


def node_bound(cred: Credential, holder: Holder) -> bool:
    """Whether :func:`check_node_binding` applies: a non-FLEX credential and a holder that is
    a tenant of a node (a job or a process there; a pin is on no node)."""
    return not cred.flex and holder.tenant is not None


def check_node_binding(cred: Credential, holder: Holder, tenants: Set[tuple[str, int]]) -> None:
    """One job per node: a non-FLEX cookie cannot be isolated between jobs on one node, so
    ``holder`` is refused while another tenant of ``tenants`` (those holding ``cred`` on the
    holder's node) uses it there."""
    if not node_bound(cred, holder):
        return
    others = tenants - {holder.tenant}
    if others:
        kind, other = sorted(others)[0]
        raise eperm(
            f"credential {cred.id} is not FLEX and is already used by {kind} {other} on "
            f"node {holder.node!r}; acquire it with DRC_FLAGS_FLEX_CREDENTIAL to share a node"
        )
