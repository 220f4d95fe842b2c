"""The DRC verbs: acquire, grant, revoke, access, release, and job/node expiration.

This is the semantic contract of DESIGN section 3 in code. It talks to a :class:`Store` and a
:class:`Provider` through their protocols only; transports (D-Bus, the DRC link) call it with a
:class:`Caller` they established from the kernel. Every verb is one store transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from drc.core.errors import Code, DrcError, eperm, not_found
from drc.core.limits import check_limits
from drc.core.model import (
    ACQUIRE_FLAGS,
    AccessInfo,
    Caller,
    Credential,
    Flags,
    Holder,
    HolderKind,
    Limit,
    LimitScope,
    Resources,
    State,
    Target,
    TargetKind,
    check_uint32,
)
from drc.core.policy import Policy
from drc.core.ports import PendingCleanup, Provider, Store, Transaction

audit = logging.getLogger("drc.audit")
log = logging.getLogger("drc.core")

#: Longest wait between two attempts to release an external resource (seconds).
CLEANUP_BACKOFF_MAX = 3600.0

#: A change node daemons must hear about at once: ("revoked", credential, new epoch) or
#: ("freed", credential, 0). Tokens and node caches for the credential stop being honoured.
ChangeListener = Callable[[str, int, int], None]


class CredentialService:
    def __init__(
        self,
        store: Store,
        provider: Provider,
        policy: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.provider = provider
        self.policy = policy or Policy()
        self.clock = clock
        self.listeners: list[ChangeListener] = []

    def _emit(self, kind: str, credential: int, value: int = 0) -> None:
        """Tell listeners, after the transaction committed."""
        for listener in self.listeners:
            listener(kind, credential, value)

    def _freed(self, freed: list[int]) -> list[int]:
        """After the freeing transaction committed: tell listeners, release external objects."""
        for cred_id in freed:
            self._emit("freed", cred_id)
        if freed and self._external:
            self._release_pending(credentials=freed)
        return freed

    # -- external resources (providers with release_external, e.g. ALPS pdomains) ----------
    #
    # Creation happens in ``allocate``, inside the acquire transaction; if that transaction
    # fails, ``_compensate`` removes the object again (or records it). Removal never happens
    # inside a transaction: ``_settle`` writes a pending-cleanup row in the same transaction that
    # deletes the credential, and after the commit ``_release_pending`` removes the object and
    # deletes the row. A failed removal stays recorded (WARNING with its name, attempts, next
    # try with backoff) for ``retry_cleanups`` and shows in ``describe()``: late, never lost.

    @property
    def _external(self) -> bool:
        return callable(getattr(self.provider, "release_external", None))

    def _external_name(self, resources: Resources) -> str:
        describe = getattr(self.provider, "describe_external", None)
        return describe(resources) if describe else repr(resources)

    def _backoff(self, attempts: int) -> float:
        base = float(getattr(self.provider, "cleanup_retry_interval", 60.0))
        return min(base * 2 ** max(attempts - 1, 0), CLEANUP_BACKOFF_MAX)

    def _release_pending(
        self, credentials: Iterable[int] | None = None, due: float | None = None
    ) -> tuple[int, int]:
        """Try the pending cleanups (of ``credentials``, or due by ``due``): (done, failed)."""
        with self.store.snapshot() as tx:
            pending = tx.pending_cleanups(credentials, due)
        done = failed = 0
        for item in pending:
            error = self._try_release(item.resources)
            with self.store.transaction() as tx:
                if error is None:
                    tx.cleanup_done(item.id)
                else:
                    attempts = item.attempts + 1
                    tx.cleanup_failed(item.id, error, self.clock() + self._backoff(attempts))
            if error is None:
                done += 1
                audit.info(
                    "external-release credential=%d %s",
                    item.credential,
                    self._external_name(item.resources),
                )
            else:
                failed += 1
                log.warning(
                    "could not remove %s of freed credential %d (attempt %d, will retry): %s",
                    self._external_name(item.resources),
                    item.credential,
                    item.attempts + 1,
                    error,
                )
        return done, failed

    def _try_release(self, resources: Resources) -> str | None:
        """None on success, else the error's text (every exception counts: never lose one)."""
        try:
            self.provider.release_external(resources)  # type: ignore[attr-defined]
        except Exception as e:  # any failure is recorded and retried
            return str(e) or type(e).__name__
        return None

    def _compensate(self, resources: Resources, credential: int) -> None:
        """An acquire failed after its external object was created: remove it, else record it."""
        error = self._try_release(resources)
        if error is None:
            audit.info(
                "external-release credential=%d %s (acquire failed)",
                credential,
                self._external_name(resources),
            )
            return
        log.warning(
            "acquire of credential %d failed and %s could not be removed (will retry): %s",
            credential,
            self._external_name(resources),
            error,
        )
        try:
            with self.store.transaction() as tx:
                row = tx.add_pending_cleanup(credential, resources, self.clock())
                tx.cleanup_failed(row, error, self.clock() + self._backoff(1))
        except Exception:
            log.error(
                "LEAKED %s of failed credential %d: neither removed nor recorded; remove by hand",
                self._external_name(resources),
                credential,
                exc_info=True,
            )

    def retry_cleanups(self) -> tuple[int, int]:
        """Retry every pending external cleanup that is due: (done, still failing).

        DRCS runs this periodically; retrying cleanup is polling by nature (ALPS tells nobody
        when a busy pdomain becomes removable). Job expiration stays event-driven.
        """
        if not self._external:
            return 0, 0
        return self._release_pending(due=self.clock())

    def pending_cleanups(self) -> list[PendingCleanup]:
        with self.store.snapshot() as tx:
            return tx.pending_cleanups()

    # -- verbs ---------------------------------------------------------------------------

    def acquire(self, caller: Caller, flags: int) -> Credential:
        """Create a credential owned by the caller and take the owner's reference.

        PERSISTENT adds a pin of the owner's uid, so the credential outlives the job.
        """
        check_uint32("flags", flags)
        if flags & ~int(ACQUIRE_FLAGS):
            raise DrcError(
                Code.EINVAL, f"acquire flags 0x{flags:x} carry bits other than FLEX|PERSISTENT"
            )
        flags = Flags(flags)
        if flags & Flags.PERSISTENT and not self.policy.may_persist(caller):
            raise eperm(
                f"uid {caller.uid} may not create PERSISTENT credentials "
                "(ask an admin to add you to persistent_users/persistent_groups)"
            )
        allocated: Resources | None = None
        cred_id = 0
        try:
            with self.store.transaction() as tx:
                limits = tx.limits()
                if limits:
                    usage = tx.usage(caller.uid, caller.gid, caller.job)
                    check_limits(limits, usage, caller.uid, caller.gid, caller.job)
                cred_id = tx.next_credential_id()
                resources = allocated = self.provider.allocate(cred_id, tx)
                credential = Credential(
                    id=cred_id,
                    uid=caller.uid,
                    gid=caller.gid,
                    wlm=caller.job,
                    flags=flags,
                    state=State.ACTIVE,
                    resources=resources,
                    created=self.clock(),
                )
                tx.insert_credential(credential)
                refs = int(tx.add_reference(cred_id, caller.holder, owner=True))
                if credential.persistent:
                    refs += tx.add_reference(cred_id, Holder.pin(caller.uid), owner=True)
                credential = replace(credential, refs=refs)
        except BaseException as e:
            # The transaction rolled back: an external object created for it must not outlive it.
            leftover = allocated or _leftover(e)
            if leftover is not None and self._external:
                self._compensate(leftover, cred_id)
            raise
        audit.info(
            "acquire credential=%d uid=%d gid=%d job=%d holder=%s flags=%s cookie1=%d",
            cred_id,
            caller.uid,
            caller.gid,
            caller.job,
            caller.holder,
            _flag_names(flags),
            resources.cookie1,
        )
        return credential

    def grant(self, caller: Caller, credential: int, target: Target) -> None:
        check_uint32("credential", credential)
        with self.store.transaction() as tx:
            cred = self._owned(tx, caller, credential, "grant access to")
            if not tx.add_grant(credential, target):
                raise DrcError(
                    Code.ALREADY_GRANTED, f"credential {credential} is already granted to {target}"
                )
        audit.info(
            "grant credential=%d target=%s by uid=%d job=%d",
            cred.id,
            target,
            caller.uid,
            caller.job,
        )

    def revoke(self, caller: Caller, credential: int, target: Target) -> None:
        """Block new access by ``target``; references already taken stay."""
        check_uint32("credential", credential)
        with self.store.transaction() as tx:
            self._owned(tx, caller, credential, "revoke access to")
            if not tx.remove_grant(credential, target):
                raise DrcError(Code.EINVAL, f"credential {credential} is not granted to {target}")
            tx.bump_epoch(credential)
            epoch = tx.get_credential(credential).epoch
        self._emit("revoked", credential, epoch)
        audit.info(
            "revoke credential=%d target=%s by uid=%d job=%d",
            credential,
            target,
            caller.uid,
            caller.job,
        )

    def access(self, caller: Caller, credential: int) -> AccessInfo:
        """Check the ACL, take the caller's reference (idempotently), answer the resources."""
        return access_info(self.access_credential(caller, credential))

    def access_credential(self, caller: Caller, credential: int) -> Credential:
        """:meth:`access`, answering the whole credential (for node daemons' caches)."""
        check_uint32("credential", credential)
        with self.store.transaction() as tx:
            cred = tx.get_credential(credential, for_update=True)
            if cred is None:
                raise not_found(credential)
            holder = caller.holder
            if not tx.has_reference(credential, holder):
                self._check_access(cred, caller)
                self._check_node_binding(tx, cred, holder)
                tx.add_reference(credential, holder, owner=self._owned_by_holder(cred, holder))
                audit.info(
                    "access credential=%d uid=%d job=%d holder=%s",
                    credential,
                    caller.uid,
                    caller.job,
                    holder,
                )
        return cred

    def release(self, caller: Caller, credential: int) -> bool:
        """Drop the caller's reference; the owner's release also drops the pin and ends the
        credential for newcomers. An admin holding no reference of its own releases it as the
        owner would (``drccli release ID`` as root); one that holds a reference drops just that.

        Returns True when this freed the credential's resources.
        """
        check_uint32("credential", credential)
        with self.store.transaction() as tx:
            cred = tx.get_credential(credential, for_update=True)
            if cred is None:
                raise not_found(credential)
            dropped = tx.drop_reference(credential, caller.holder)
            as_owner = caller.uid == cred.uid or (not dropped and self.policy.is_admin(caller))
            if as_owner:
                dropped |= tx.drop_reference(credential, Holder.pin(cred.uid))
                if cred.state is State.ACTIVE:
                    tx.set_state(credential, State.RELEASED)
            elif not dropped:
                raise eperm(
                    f"uid {caller.uid} ({caller.holder}) holds no reference to "
                    f"credential {credential} and does not own it"
                )
            freed = self._settle(tx, [credential])
        self._freed(freed)
        audit.info(
            "release credential=%d uid=%d job=%d holder=%s owner=%s freed=%s",
            credential,
            caller.uid,
            caller.job,
            caller.holder,
            as_owner,
            bool(freed),
        )
        return bool(freed)

    # -- expiration and reconciliation ---------------------------------------------------

    def expire_jobs(self, jobs: Iterable[int]) -> list[int]:
        """Job(s) ended: drop their references on every node. Idempotent. Returns freed ids."""
        jobs = {check_uint32("job", j) for j in jobs} - {0}
        if not jobs:
            return []
        with self.store.transaction() as tx:
            freed = self._settle(tx, tx.drop_job_references(jobs))
        audit.info("expire jobs=%s freed=%s", sorted(jobs), freed)
        return self._freed(freed)

    def node_rebooted(self, node: str) -> list[int]:
        """A node came back with a new boot id: none of its references survived."""
        with self.store.transaction() as tx:
            freed = self._settle(tx, tx.drop_node_references(node))
        audit.info("node-reboot node=%s freed=%s", node, freed)
        return self._freed(freed)

    def processes_exited(self, node: str, processes: Iterable[tuple[int, int]]) -> list[int]:
        """Processes (pid, start time) outside any job ended on ``node``."""
        processes = list(processes)
        if not processes:
            return []
        with self.store.transaction() as tx:
            freed = self._settle(tx, tx.drop_process_references(node, processes))
        audit.info("process-exit node=%s processes=%s freed=%s", node, processes, freed)
        return self._freed(freed)

    def node_booted(self, node: str, boot_id: str) -> list[int]:
        """A node daemon (re)started: if the node rebooted since we last heard, drop its refs."""
        with self.store.transaction() as tx:
            known = tx.node_boot_id(node)
            tx.set_node_boot_id(node, boot_id, self.clock())
            if known is None or known == boot_id:
                return []
            freed = self._settle(tx, tx.drop_node_references(node))
        audit.info("node-reboot node=%s boot_id=%s freed=%s", node, boot_id, freed)
        return self._freed(freed)

    def add_token_references(self, references: Iterable[tuple[Caller, int, int]]) -> list[int]:
        """References taken on a node with a token: (caller, credential, token epoch).

        The node checked the token; here each is admitted only while the credential is still
        ACTIVE and the token's epoch is current. Returns the credentials refused.
        """
        refused = []
        with self.store.transaction() as tx:
            for caller, credential, epoch in references:
                cred = tx.get_credential(credential)
                if cred is None or cred.state is not State.ACTIVE or cred.epoch != epoch:
                    refused.append(credential)
                    continue
                try:
                    self._check_node_binding(tx, cred, caller.holder)
                except DrcError:
                    refused.append(credential)
                    continue

                tx.add_reference(
                    credential, caller.holder, owner=self._owned_by_holder(cred, caller.holder)
                )
        audit.info("token-references added refused=%s", refused)
        return refused

    def process_holders(self, node: str) -> set[tuple[int, int]]:
        """Processes outside jobs holding references on ``node``: what a restarted DRCC checks."""
        with self.store.snapshot() as tx:
            return tx.process_holders(node)

    def outstanding_jobs(self) -> set[int]:
        """Jobs that hold references: what reconciliation compares with the WLM."""

        with self.store.snapshot() as tx:
            return tx.outstanding_jobs()

    # -- queries and administration ------------------------------------------------------

    def get(self, caller: Caller, credential: int) -> Credential:
        check_uint32("credential", credential)
        with self.store.snapshot() as tx:
            cred = tx.get_credential(credential)
        if cred is None or not self._may_see(cred, caller):
            raise not_found(credential)
        return cred

    def list(self, caller: Caller) -> list[Credential]:
        """Admins see every credential; others see what they own or may access."""
        with self.store.snapshot() as tx:
            creds = tx.list_credentials()
        return [c for c in creds if self._may_see(c, caller)]

    def limits(self) -> list[Limit]:
        with self.store.snapshot() as tx:
            return sorted(tx.limits())

    def set_limit(self, caller: Caller, scope: LimitScope, id: int, value: int | None) -> None:
        """Set (or with ``value=None`` remove) one limit. Admins only."""
        if not self.policy.is_admin(caller):
            raise eperm(f"uid {caller.uid} is not a DRC admin: only admins may change limits")
        check_uint32("limit id", id)
        if not scope.takes_id and id != 0:
            raise DrcError(Code.EINVAL, f"the {scope} limit takes no id")
        with self.store.transaction() as tx:
            if value is None:
                tx.clear_limit(scope, id)
            else:
                tx.set_limit(Limit(scope, id, check_uint32("limit value", value)))
        audit.info("limit scope=%s id=%d value=%s by uid=%d", scope, id, value, caller.uid)

    def describe(self) -> dict[str, object]:
        with self.store.snapshot() as tx:
            creds = tx.list_credentials()
            pool = self.provider.describe(tx)
            pending = tx.pending_cleanups() if self._external else []
        return {
            "store": self.store.describe(),
            "provider": pool,
            "credentials": len(creds),
            "references": sum(c.refs for c in creds),
            "limits": [str(lim) for lim in self.limits()],
            "pending_cleanups": [self._cleanup_dict(p) for p in pending],
        }

    def _cleanup_dict(self, p: PendingCleanup) -> dict[str, Any]:
        return {
            "credential": p.credential,
            "object": self._external_name(p.resources),
            "attempts": p.attempts,
            "next_try": p.next_try,
            "last_error": p.last_error,
        }

    # -- rules ---------------------------------------------------------------------------

    def _may_manage(self, cred: Credential, caller: Caller) -> bool:
        return caller.uid == cred.uid or self.policy.is_admin(caller)

    def _owned(self, tx: Transaction, caller: Caller, credential: int, verb: str) -> Credential:
        cred = tx.get_credential(credential, for_update=True)
        if cred is None:
            raise not_found(credential)
        if not self._may_manage(cred, caller):
            raise eperm(
                f"only the owner (uid {cred.uid}) or an admin may {verb} credential {credential}"
            )
        if cred.state is not State.ACTIVE:
            raise DrcError(
                Code.CRED_NOT_FOUND, f"credential {credential} was released by its owner"
            )
        return cred

    def _check_access(self, cred: Credential, caller: Caller) -> None:
        if cred.state is not State.ACTIVE:
            raise DrcError(Code.CRED_NOT_FOUND, f"credential {cred.id} was released by its owner")
        if not self._may_access(cred, caller):
            raise eperm(
                f"uid {caller.uid} (job {caller.job}) is not granted access to credential {cred.id}"
            )

    def _may_access(self, cred: Credential, caller: Caller) -> bool:
        if caller.uid == cred.uid or self.policy.is_admin(caller):
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

    def _may_see(self, cred: Credential, caller: Caller) -> bool:
        return self._may_access(cred, caller)

    @staticmethod
    def _owned_by_holder(cred: Credential, holder: Holder) -> bool:
        """References of the owner's job or pin keep a transient credential ACTIVE."""
        return (holder.kind is HolderKind.JOB and cred.wlm != 0 and holder.job == cred.wlm) or (
            holder.kind is HolderKind.PIN and holder.uid == cred.uid
        )

    @staticmethod
    def _check_node_binding(tx: Transaction, cred: Credential, holder: Holder) -> None:
        """A non-FLEX cookie cannot be isolated between jobs on one node: one job per node."""
        tenant = holder.tenant
        if cred.flex or tenant is None:
            return
        others = tx.tenants_on_node(cred.id, holder.node) - {tenant}
        if others:
            kind, other = sorted(others)[0]
            raise eperm(
                f"credential {cred.id} is not FLEX and is already used by {kind} {other} on "
                f"node {holder.node!r}; acquire it with DRC_FLAGS_FLEX_CREDENTIAL to share a node"
            )

    def _settle(self, tx: Transaction, touched: Iterable[int]) -> list[int]:
        """After references went: free credentials with none left, mark owner-less ones."""
        counts = tx.reference_counts(sorted(set(touched)))
        unreferenced = [cid for cid, (refs, _) in counts.items() if refs == 0]
        ownerless = [cid for cid, (refs, owners) in counts.items() if refs and not owners]
        freed = tx.list_credentials(unreferenced) if unreferenced else []
        for cred in freed:
            self.provider.free(cred.resources, tx)
        if freed and self._external:
            # Same transaction as the deletion: the removal owed outside can never be lost.
            now = self.clock()
            for cred in freed:
                tx.add_pending_cleanup(cred.id, cred.resources, now)
        if freed:
            tx.delete_credentials([c.id for c in freed])
        for cred_id in ownerless:
            tx.set_state(cred_id, State.RELEASED)
        for cred in freed:
            audit.info("free credential=%d cookie1=%d", cred.id, cred.resources.cookie1)
        return [c.id for c in freed]


def _leftover(error: BaseException) -> Resources | None:
    """The external object a failed ``allocate`` may have left behind (see ExternalProvider)."""
    leftover = getattr(error, "leftover", None)
    return leftover if isinstance(leftover, Resources) else None


def access_info(cred: Credential) -> AccessInfo:
    r = cred.resources
    return AccessInfo(credential=cred.id, cookie1=r.cookie1, cookie2=r.cookie2, ptag=r.ptag)


def _flag_names(flags: Flags) -> str:
    return "|".join(f.name for f in Flags if f and flags & f) or "0"
