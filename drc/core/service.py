"""The DRC verbs: acquire, grant, revoke, access, release, and job/node expiration.

This is the semantic contract of DESIGN section 3 in code. It talks to a :class:`Store` and a
:class:`Provider` through their protocols only, and to the provider's optional features only
as it declares them; transports (D-Bus, the DRC link) call it with a :class:`Caller` they
established from the kernel. Every verb is one store transaction; who may do what is decided
by :mod:`drc.core.policy`. A verb that writes takes the :class:`Unit` it runs in (the request
to record, the group commit's batch) as its last argument and hands it to that transaction;
None: a transaction of its own that records nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import cast

from drc.core import policy as rules
from drc.core.cleanup import ExternalCleanup, leftover_of
from drc.core.errors import Code, DrcError, einval, eperm, not_found
from drc.core.limits import LimitHits, check_limits
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
    check_uint32,
)
from drc.core.policy import Policy
from drc.core.ports import (
    ExternalObjects,
    NodeObjects,
    PendingCleanup,
    Provider,
    Store,
    StoreBound,
    Transaction,
    Unit,
    provider_features,
)
from drc.core.tokens import issue_token

audit = logging.getLogger("drc.audit")

#: The limits a pin counts against: its user's (a pin adds no credential, group or job).
USER_SCOPES = frozenset({LimitScope.USER_DEFAULT, LimitScope.UID})

#: Said with a refusal by the drc.conf default per-user limit, which ``drccli limit`` lists not.
CONFIGURED_NOTE = (
    "the default of drc.conf [server] user_limit (an admin may store another: "
    "drccli limit --user-default N)"
)

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
        # The provider's declared features, checked here once (a misspelt one fails now).
        features = provider_features(provider)
        external = cast(ExternalObjects, provider) if ExternalObjects in features else None
        self.cleanup = ExternalCleanup(store, external, lambda: self.clock())
        self.limit_hits = LimitHits(lambda: self.clock())
        #: The provider's hooks for objects nodes build per access (Slingshot CXI services).
        self.node_objects = cast(NodeObjects, provider) if NodeObjects in features else None
        if StoreBound in features:  # reads the store outside a verb (slingshot)
            cast(StoreBound, provider).bind_store(store)

    def _emit(self, kind: str, credential: int, value: int = 0) -> None:
        """Tell listeners, after the transaction committed."""
        for listener in self.listeners:
            listener(kind, credential, value)

    def _freed(self, freed: list[Credential], *, named: bool = False) -> list[int]:
        """After the freeing transaction committed: audit each free (unless the caller's own
        line ``named`` it), tell listeners, release external objects; the freed ids."""
        ids = [cred.id for cred in freed]
        if not named:
            for cred in freed:
                audit.info("free credential=%d cookie1=%d", cred.id, cred.resources.cookie1)
        for cred_id in ids:
            self._emit("freed", cred_id)
        if ids:
            self.cleanup.release(credentials=ids)
        return ids

    def retry_cleanups(self) -> tuple[int, int]:
        """Retry the due removals of external objects (see :mod:`drc.core.cleanup`)."""
        return self.cleanup.retry()

    def pending_cleanups(self) -> list[PendingCleanup]:
        return self.cleanup.pending()

    # -- verbs ---------------------------------------------------------------------------

    def acquire(self, caller: Caller, flags: int, unit: Unit | None = None) -> Credential:
        """Create a credential owned by the caller and take the owner's reference.

        PERSISTENT adds a pin of the owner's uid, so the credential outlives the job.
        """
        check_uint32("flags", flags)
        if flags & ~int(ACQUIRE_FLAGS):
            raise DrcError(
                Code.EFLAGS, f"acquire flags 0x{flags:x} carry bits other than FLEX|PERSISTENT"
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
            with self.store.transaction(unit) as tx:
                self._check_limits(tx, caller)
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
            leftover = allocated or leftover_of(e)
            if leftover is not None:
                again = unit.without_request() if unit is not None else None  # same batch
                self.cleanup.compensate(leftover, cred_id, again)
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

    def _check_limits(
        self, tx: Transaction, caller: Caller, scopes: frozenset[LimitScope] | None = None
    ) -> None:
        """Refuse (ENOSPC, audited) if one more credential counted for the caller breaks a
        limit: every limit for an acquire, those of ``scopes`` for a new pin. The count
        and the limits are held until commit (another DRCS counting against the same
        scopes waits), so two acquires never both take the last place."""
        tx.hold_limits()
        stored = tx.limits()
        limits = self.policy.limits_for(caller, stored)
        if scopes is not None:
            limits = [lim for lim in limits if lim.scope in scopes]
        if not limits:
            return
        counted = {lim.scope for lim in limits}
        tx.hold_usage(caller.uid, caller.gid, caller.job, counted)
        usage = tx.usage(caller.uid, caller.gid, caller.job, counted)
        notes = {lim: CONFIGURED_NOTE for lim in limits if lim not in stored}
        try:
            check_limits(limits, usage, caller.uid, caller.gid, caller.job, notes)
        except DrcError as refused:
            self.limit_hits.record(caller, refused)
            raise

    def grant(
        self, caller: Caller, credential: int, target: Target, unit: Unit | None = None
    ) -> None:
        check_uint32("credential", credential)
        with self.store.transaction(unit, hold=[credential], exclusive=True) as tx:
            cred = self._managed(tx, caller, credential, "grant access to")
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

    def revoke(
        self, caller: Caller, credential: int, target: Target, unit: Unit | None = None
    ) -> None:
        """Block new access by ``target``; references already taken stay."""
        check_uint32("credential", credential)
        with self.store.transaction(unit, hold=[credential], exclusive=True) as tx:
            self._managed(tx, caller, credential, "revoke access to")
            if not tx.remove_grant(credential, target):
                raise DrcError(
                    Code.EBADTARGET, f"credential {credential} is not granted to {target}"
                )
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

    def access(self, caller: Caller, credential: int, unit: Unit | None = None) -> AccessInfo:
        """Check the ACL, take the caller's reference (idempotently), answer the resources."""
        return access_info(self.access_credential(caller, credential, unit))

    def access_credential(
        self, caller: Caller, credential: int, unit: Unit | None = None
    ) -> Credential:
        """:meth:`access`, answering the whole credential (for node daemons' caches).

        Its ``refs`` is 0, not counted: nothing here needs the count, and counting took time
        in proportion to the credential's references, so a storm of 10,000 nodes slowed as
        it went. ``get``/``list`` count exactly.
        """
        check_uint32("credential", credential)
        # held shared: other accesses go on; a release, revoke or free waits (or is waited for)
        with self.store.transaction(unit, hold=[credential]) as tx:
            cred = tx.get_credential(credential, count_refs=False)
            if cred is None:
                raise not_found(credential)
            holder = caller.holder
            added = self._admit(tx, cred, caller)
            if self.node_objects is not None and holder.node:
                # The node will build objects for this access (Slingshot CXI services): it
                # owes their removal, recorded before it learns the answer.
                self.node_objects.node_reference(tx, cred, holder.node)
        if added:  # after the transaction, as every verb's line: never for a rolled-back one
            audit.info(
                "access credential=%d uid=%d job=%d holder=%s",
                credential,
                caller.uid,
                caller.job,
                holder,
            )
        return cred

    def release(self, caller: Caller, credential: int, unit: Unit | None = None) -> bool:
        """Drop the caller's reference; the owner's release also drops the pin and ends the
        credential for newcomers. An admin holding no reference of its own releases it as the
        owner would (``drccli release ID`` as root); one that holds a reference drops just that.

        Returns True when this freed the credential's resources.
        """
        check_uint32("credential", credential)
        # held exclusive: no access adds a reference between counting and freeing
        with self.store.transaction(unit, hold=[credential], exclusive=True) as tx:
            cred = tx.get_credential(credential, count_refs=False)  # _settle counts
            if cred is None:
                raise not_found(credential)
            dropped = tx.drop_reference(credential, caller.holder)
            as_owner = self.policy.releases_as_owner(cred, caller, dropped)
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
        # One line for the release and the free it caused (the commonest pair of changes).
        audit.info(
            "release credential=%d uid=%d job=%d holder=%s owner=%s freed=%s%s",
            credential,
            caller.uid,
            caller.job,
            caller.holder,
            as_owner,
            bool(freed),
            f" cookie1={freed[0].resources.cookie1}" if freed else "",
        )
        self._freed(freed, named=True)
        return bool(freed)

    # -- expiration and reconciliation ---------------------------------------------------

    def expire_jobs(
        self, jobs: Iterable[int], *, node: str | None = None, unit: Unit | None = None
    ) -> list[int]:
        """Job(s) ended: drop their references on every node, or on ``node`` only (each
        node's epilog reports its own part of a multi-node job; the credential is freed
        when the last node's references go). Idempotent. Returns freed ids."""
        jobs = {check_uint32("job", j) for j in jobs} - {0}
        if not jobs:
            return []
        with self.store.transaction(unit) as tx:
            if node is None:
                dropped = tx.drop_job_references(jobs)
            else:
                dropped = tx.drop_job_references_on_node(node, jobs)
            freed = self._settle(tx, dropped)
        where = "" if node is None else f" node={node}"
        ids = self._freed(freed)
        audit.info("expire jobs=%s%s freed=%s", sorted(jobs), where, ids)
        return ids

    def node_rebooted(self, node: str, unit: Unit | None = None) -> list[int]:
        """A node came back with a new boot id: none of its references survived."""
        with self.store.transaction(unit) as tx:
            freed = self._settle(tx, tx.drop_node_references(node))
        ids = self._freed(freed)
        audit.info("node-reboot node=%s freed=%s", node, ids)
        return ids

    def processes_exited(
        self, node: str, processes: Iterable[tuple[int, int]], unit: Unit | None = None
    ) -> list[int]:
        """Processes (pid, start time) outside any job ended on ``node``."""
        processes = list(processes)
        if not processes:
            return []
        with self.store.transaction(unit) as tx:
            freed = self._settle(tx, tx.drop_process_references(node, processes))
        ids = self._freed(freed)
        audit.info("process-exit node=%s processes=%s freed=%s", node, processes, ids)
        return ids

    def node_hello(
        self, node: str, boot_id: str, unit: Unit | None = None, *, server: str | None = None
    ) -> tuple[bool, list[int]]:
        """A node daemon started with this boot id: (whether the node rebooted since DRCS
        last heard of it, the credentials that freed). A reboot ends every process and job
        step of the node, so its references go; a first hello or the same boot keeps them.
        One transaction: two DRCC of one node racing cannot both miss the reboot. With
        ``server``, the same transaction records that the node follows it (NodeConnect)."""
        if not 0 < len(boot_id) <= 64 or not boot_id.isprintable():
            raise einval("boot_id must be a printable id of 1..64 characters")
        if server is not None:
            _check_server(server)
        with self.store.transaction(unit) as tx:
            follows = None if server is None else (server, time.time())
            known = tx.node_connected(node, boot_id, self.clock(), follows)
            if known is None or known == boot_id:
                return False, []
            freed = self._settle(tx, tx.drop_node_references(node))
        ids = self._freed(freed)
        audit.info("node-reboot node=%s boot_id=%s freed=%s", node, boot_id, ids)
        return True, ids

    def node_follows(self, node: str, server: str, unit: Unit | None = None) -> None:
        """A node daemon follows this DRCS now (``drccli status`` lists who follows whom).
        A node that moved here says so with NodeMoved instead (:meth:`nodes_moved`)."""
        _check_server(server)
        with self.store.transaction(unit) as tx:
            tx.set_node_server(node, server, time.time())

    def nodes_moved(
        self, moves: Iterable[tuple[str, str, list[int]]], unit: Unit | None = None
    ) -> dict[int, int]:
        """Nodes that moved here together (NodeMoved, gathered by the exporter), each
        ``(node, server, credentials)`` already checked (:func:`check_move`): every follow
        and the epochs of every credential they asked about, in one transaction of two
        statements on PostgreSQL (one multi-row write, one read), where one transaction per
        node cost four round trips each. A node moving twice counts as its last move."""
        follows = {node: server for node, server, _ids in moves}
        ids = sorted({c for _node, _server, credentials in moves for c in credentials})
        with self.store.transaction(unit) as tx:
            tx.set_nodes_server(list(follows.items()), time.time())
            return tx.credential_epochs(ids) if ids else {}

    def node_servers(self) -> list[tuple[str, str, float]]:
        """(node, DRCS it follows, since when) of every node that said."""
        with self.store.snapshot() as tx:
            return list(tx.node_servers())

    def credential(self, credential: int) -> Credential | None:
        """A credential by id, unchecked: for answering a retried request whose first run
        already admitted the caller."""
        with self.store.snapshot() as tx:
            return tx.get_credential(credential)

    def node_objects_state(self, node: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(live, owed) (credential, object) pairs of ``node``: for Slingshot, VNIs whose CXI
        services it keeps and those it must destroy. Empty without :class:`NodeObjects`."""
        if self.node_objects is None:
            return [], []
        with self.store.snapshot() as tx:
            return self.node_objects.node_state(tx, node)

    def node_objects_removed(
        self, node: str, credentials: list[int], unit: Unit | None = None
    ) -> list[int]:
        """``node`` removed its objects of these freed credentials: those confirmed. Their
        external cleanup is tried at once (a VNI returns to the pool once no node owes it
        and its quarantine passed)."""
        ids = [check_uint32("credential", c) for c in credentials]
        if self.node_objects is None:
            return []
        with self.store.transaction(unit) as tx:
            done = self.node_objects.node_cleaned(tx, node, ids, self.clock())
        if done:
            self.cleanup.release(credentials=done)
        return done

    def epochs(self, credentials: Iterable[int]) -> dict[int, int]:
        """The current revocation epoch of each of these credentials that still exists
        (what a node daemon resynchronising its token checks asks)."""
        ids = [check_uint32("credential", c) for c in credentials]
        with self.store.snapshot() as tx:
            return tx.credential_epochs(ids)

    def token(self, caller: Caller, credential: int, key: bytes | None, ttl: float) -> str:
        """A signed token for a credential the caller may access (not found otherwise)."""
        if key is None:
            raise DrcError(Code.CRED_EXTERNAL_FAILURE, "DRCS has no token key configured")
        cred = self.get(caller, credential)
        # The wall clock, not self.clock: node daemons check expiry against theirs.
        return issue_token(key, cred, now=time.time(), ttl=ttl)

    def add_token_references(
        self, references: Iterable[tuple[Caller, int, int]], unit: Unit | None = None
    ) -> list[int]:
        """References taken on a node with a token: (caller, credential, token epoch).

        The node checked the token; here each is admitted only while the credential is still
        ACTIVE and the token's epoch is current. Returns the credentials refused.
        """
        refused = []
        references = list(references)
        with self.store.transaction(unit) as tx:
            tx.lock_credentials([c for _, c, _ in references], exclusive=False)
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
                    credential, caller.holder, owner=rules.owned_by_holder(cred, caller.holder)
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

    def job_credential(self, caller: Caller) -> int:
        """The credential the caller's job holds: the lowest id of a credential that a JOB
        reference of that job holds, on any node; 0 outside a job or when it holds none.

        What a step of a multi-node job uses on a node where the job took nothing yet (the
        SPANK plugin's ``--drc=acquire``): the batch step's acquire recorded the job's
        reference on the batch host in its own transaction, so the acquired credential is
        always found this way while the job lives; one the job accessed counts the same, as
        in the node cache. A reference exists only while its credential does (freed ones are
        gone). Read-only.
        """
        if caller.job == 0 or caller.holder.kind is not HolderKind.JOB:
            return 0
        with self.store.snapshot() as tx:
            return tx.job_credential(caller.job)

    # -- queries and administration ------------------------------------------------------

    def get(self, caller: Caller, credential: int) -> Credential:
        check_uint32("credential", credential)
        with self.store.snapshot() as tx:
            cred = tx.get_credential(credential)
        if cred is None or not self.policy.may_access(cred, caller):
            raise not_found(credential)
        return cred

    def list(self, caller: Caller) -> list[Credential]:
        """Admins see every credential; others see what they own or may access."""
        with self.store.snapshot() as tx:
            creds = tx.list_credentials()
        return [c for c in creds if self.policy.may_access(c, caller)]

    def holders(self, creds: list[Credential]) -> dict[int, list[Holder]]:
        """Who holds the references of credentials the caller was allowed to see (by
        :meth:`get` or :meth:`list`): what keeps a RELEASED credential alive."""
        with self.store.snapshot() as tx:
            return tx.holders(c.id for c in creds)

    def limits(self) -> list[Limit]:
        with self.store.snapshot() as tx:
            return sorted(tx.limits())

    def set_limit(
        self,
        caller: Caller,
        scope: LimitScope,
        id: int,
        value: int | None,
        unit: Unit | None = None,
    ) -> None:
        """Set (or with ``value=None`` remove) one limit. Admins only."""
        self.policy.check_admin(caller, "change limits")
        check_uint32("limit id", id)
        if not scope.takes_id and id != 0:
            raise DrcError(Code.EINVAL, f"the {scope} limit takes no id")
        with self.store.transaction(unit) as tx:
            if value is None:
                tx.clear_limit(scope, id)
            else:
                tx.set_limit(Limit(scope, id, check_uint32("limit value", value)))
        audit.info("limit scope=%s id=%d value=%s by uid=%d", scope, id, value, caller.uid)

    def pins(self, caller: Caller) -> list[tuple[int, Credential]]:
        """(pinning uid, credential) of every pin: what keeps a credential alive with no
        process or job behind it (``drccli pins``). Admins only."""
        self.policy.check_admin(caller, "list pins")
        with self.store.snapshot() as tx:
            pins = tx.pins()
            creds = {c.id: c for c in tx.list_credentials(sorted({c for _, c in pins}))}
        return [(uid, creds[cred]) for uid, cred in pins if cred in creds]

    def expire_pins(self, caller: Caller, uid: int, unit: Unit | None = None) -> list[int]:
        """Drop every pin of ``uid`` (``drccli unpin USER``): credentials nothing else holds
        are freed, and those left without an owner's reference go to RELEASED (no new access
        or grant), as after a release. Admins only. Returns the freed ids."""
        self.policy.check_admin(caller, "expire pins")
        check_uint32("uid", uid)
        with self.store.transaction(unit) as tx:
            dropped = tx.drop_pins(uid)
            freed = self._settle(tx, dropped)
        ids = self._freed(freed)
        audit.info(
            "expire-pins uid=%d credentials=%s freed=%s by uid=%d",
            uid,
            sorted(dropped),
            ids,
            caller.uid,
        )
        return ids

    def describe(self) -> dict[str, object]:
        with self.store.snapshot() as tx:
            creds = tx.list_credentials()
            pool = self.provider.describe(tx)
            pending = tx.pending_cleanups() if self.cleanup.enabled else []
            nodes = tx.node_count()
        return {
            "nodes_known": nodes,
            "store": self.store.describe(),
            "provider": pool,
            "credentials": len(creds),
            "references": sum(c.refs for c in creds),
            "limits": [str(lim) for lim in self.limits()] + self._configured_limits(),
            "pending_cleanups": [self.cleanup.describe(p) for p in pending],
        }

    def _configured_limits(self) -> list[str]:
        """The drc.conf default per-user limit, where it is in force, for ``drccli status``."""
        if self.policy.user_limit is None or any(
            lim.scope is LimitScope.USER_DEFAULT for lim in self.limits()
        ):
            return []
        return [f"user-default: {self.policy.user_limit} (drc.conf user_limit; not root)"]

    # -- rules: the decisions are drc.core.policy's; here, what they read ------------------

    def _managed(self, tx: Transaction, caller: Caller, credential: int, verb: str) -> Credential:
        """The credential, if the caller may change its ACL (``verb`` names the change); the
        transaction holds it exclusive."""
        cred = tx.get_credential(credential)
        if cred is None:
            raise not_found(credential)
        self.policy.check_manage(cred, caller, verb)
        return cred

    def _admit(self, tx: Transaction, cred: Credential, caller: Caller) -> bool:
        """An access's reference: whether it is new (False: the holder held one already).

        A holder that holds a reference keeps its access, whatever the rules say now; any
        other is admitted by the rules (ACL, one job per node, a pin's limits). The rules are
        asked first and the reference added if absent (one INSERT that says whether it
        added one: its unique index finds the holder, in time independent of how many
        references the credential has); whether the holder holds one is asked only when the
        rules refuse, or before counting a pin against its user's limits (a held pin counts
        already)."""
        holder = caller.holder
        pin = rules.pins_another_users(cred, caller)
        if pin and tx.has_reference(cred.id, holder):
            return False
        try:
            self.policy.check_access(cred, caller)
            self._check_node_binding(tx, cred, holder)
        except DrcError:
            if tx.has_reference(cred.id, holder):
                return False
            raise
        if pin:
            self._check_limits(tx, caller, USER_SCOPES)
        return tx.add_reference(cred.id, holder, owner=rules.owned_by_holder(cred, holder))

    @staticmethod
    def _check_node_binding(tx: Transaction, cred: Credential, holder: Holder) -> None:
        """One job per node (:func:`drc.core.policy.check_node_binding`); the tenants are
        read only when the rule applies."""
        if rules.node_bound(cred, holder):
            rules.check_node_binding(cred, holder, tx.tenants_on_node(cred.id, holder.node))

    def _settle(self, tx: Transaction, touched: Iterable[int]) -> list[Credential]:
        """After references went: free credentials with none left, mark owner-less ones;
        the freed (announced by :meth:`_freed` once the transaction committed)."""
        counts = tx.reference_counts(sorted(set(touched)))
        unreferenced = [cid for cid, (refs, _) in counts.items() if refs == 0]
        ownerless = [cid for cid, (refs, owners) in counts.items() if refs and not owners]
        freed = tx.list_credentials(unreferenced) if unreferenced else []
        for cred in freed:
            self.provider.free(cred.resources, tx)
        self.cleanup.record(tx, freed)
        if freed:
            tx.delete_credentials([c.id for c in freed])
        for cred_id in ownerless:
            tx.set_state(cred_id, State.RELEASED)
        return freed


def access_info(cred: Credential) -> AccessInfo:
    r = cred.resources
    return AccessInfo(credential=cred.id, cookie1=r.cookie1, cookie2=r.cookie2, ptag=r.ptag)


def _flag_names(flags: Flags) -> str:
    return "|".join(f.name for f in Flags if f and flags & f) or "0"


def _check_server(server: str) -> None:
    """The DRCS a node says it follows: its ``host:port``, as drccli status prints it."""
    if not isinstance(server, str) or not 0 < len(server) <= 255 or not server.isprintable():
        raise einval("server must be a printable host:port of 1..255 characters")


def check_move(server: str, credentials: Iterable[int]) -> list[int]:
    """A NodeMoved's arguments checked before it joins others (:meth:`nodes_moved`), so a
    bad one is refused alone: the credential ids it asks the epochs of."""
    _check_server(server)
    return [check_uint32("credential", c) for c in credentials]
