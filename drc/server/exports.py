"""``org.drc.Server``: the DRCS service object every exporter publishes.

Each method turns the transport's kernel-verified peer into a :class:`Caller`, validates its
arguments and calls the core. Direct callers (drccli, scripts on the service node) act outside
any job: their references are *pins* of their uid that last until they release them — the
paper's "acquire, then grant, list, release in separate commands".
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from drc.bus import PeerCredentials, method
from drc.core.errors import Code, DrcError, eflags, einval, eperm
from drc.core.model import (
    Caller,
    Credential,
    Holder,
    HolderKind,
    LimitScope,
    Target,
    check_uint32,
)
from drc.core.service import CredentialService
from drc.core.tokens import issue_token
from drc.identity import process_gid
from drc.refusals import RefusalAudit, credential_of
from drc.server.changes import FREED, ChangeLog
from drc.server.group import GroupCommit
from drc.server.slingshot import SlingshotNodeVerbs

BUS_NAME = "org.drc.Server"
OBJECT_PATH = "/org/drc/Server"
INTERFACE = "org.drc.Server"
T = TypeVar("T")
MAX_JOBS_PER_CALL = 100_000
MAX_BATCH = 10_000
NODE = "node"  # hook of the methods node daemons call (the only ones the DRC link serves)
WATCH_TIMEOUT_MAX = 300
#: A NodeWatch with changes to answer gathers more this long before answering: every
#: answer costs each following node a MUNGE-signed round trip, so a burst of frees (hundreds
#: a second) otherwise woke every node once per free. Small beside revocation's budget.
WATCH_COALESCE = 0.01


ROOT = Caller(uid=0, gid=0)


#: The primary gid of each bus connection, read from /proc on its first call. Weak keys: an
#: entry lives as long as the bus exporter's peer-credential cache holds that connection's
#: credentials (dropped when its unique name loses its owner), so it can never pass to
#: another process. Why caching is safe: the uid and supplementary gids the bus reports are
#: already what the kernel said when the connection was made, so the whole identity is now
#: consistently that of the connection's first call; a process that later changes its gid
#: (setegid, exec of a setgid program keeping the socket) keeps the identity it connected
#: with, as it already kept its uid and groups. Reading /proc cost ~25 us on every call.
_connection_gids: weakref.WeakKeyDictionary[PeerCredentials, int] = weakref.WeakKeyDictionary()


def _connection_gid(peer: PeerCredentials) -> int:
    gid = _connection_gids.get(peer)
    if gid is None:
        gid = _connection_gids[peer] = process_gid(peer.pid, peer.uid)
    return gid


def direct_caller(peer: PeerCredentials) -> Caller:
    return Caller(
        uid=peer.uid,
        gid=_connection_gid(peer),
        gids=peer.gids,
        pid=peer.pid,
        holder=Holder.pin(peer.uid),
    )


def credential_dict(c: Credential) -> dict[str, Any]:
    """A credential as ``a{sv}``: the fields of ``drccli list`` and more. ``refs`` is exact
    in get/list answers; an access answer leaves it 0 (not counted, see
    :meth:`drc.core.service.CredentialService.access_credential`)."""
    r = c.resources
    return {
        "credential": c.id,
        "uid": c.uid,
        "gid": c.gid,
        "wlm": c.wlm,
        "flags": int(c.flags),
        "state": c.state.value,
        "provider": r.provider,
        "cookie1": r.cookie1,
        "cookie2": r.cookie2,
        "ptag": r.ptag,
        "refs": c.refs,
        "epoch": c.epoch,
        "created": c.created,
        "grants": [str(g) for g in c.grants],
        **({"vni": r.cookie1} if r.provider == "slingshot" else {}),
    }


def holder_dict(h: Holder) -> dict[str, Any]:
    """A reference's holder: a job or a process on a node, or a uid's persistent pin."""
    if h.kind is HolderKind.JOB:
        return {"kind": h.kind.value, "node": h.node, "job": h.job}
    if h.kind is HolderKind.PROCESS:
        return {"kind": h.kind.value, "node": h.node, "pid": h.pid}
    return {"kind": h.kind.value, "uid": h.uid}


def listed_dict(c: Credential, holders: list[Holder]) -> dict[str, Any]:
    """What List and Show answer: the credential and who holds its references."""
    return {**credential_dict(c), "holders": [holder_dict(h) for h in holders]}


def _node_name(node: object) -> str:
    if not isinstance(node, str) or not 0 < len(node) <= 255 or not node.isprintable():
        raise einval("node must be a printable name of 1..255 characters")
    return node


def node_caller(wire: dict[str, Any]) -> Caller:
    """The application process a node daemon speaks for, as that daemon identified it."""
    if not isinstance(wire, dict):
        raise einval("caller must be a dictionary")
    try:
        uid, gid = check_uint32("uid", wire["uid"]), check_uint32("gid", wire["gid"])
        gids = wire.get("gids", [])
        if not isinstance(gids, list) or len(gids) > 65536:
            raise einval("gids must be a list of at most 65536 gids")
        pid, job = check_uint32("pid", wire.get("pid", 0)), check_uint32("job", wire["job"])
        node = _node_name(wire["node"])
        start = wire.get("start", 0)
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start < 2**64:
            raise einval("start must be a process start time (uint64)")
    except KeyError as e:
        raise einval(f"caller is missing {e.args[0]!r}") from None
    if job:
        holder = Holder.for_job(node, job)
    elif pid:
        holder = Holder.for_process(node, pid, start)
    else:
        raise einval("caller needs a job or a pid")
    return Caller(
        uid=uid,
        gid=gid,
        gids=frozenset(check_uint32("gid", g) for g in gids),
        pid=pid,
        job=job,
        holder=holder,
    )


class NodeVerbs(SlingshotNodeVerbs):
    """The verbs node daemons (DRCC) call, over the DRC link or the bus, for their callers."""

    service: CredentialService
    changes: ChangeLog
    token_key: bytes | None
    token_ttl: float
    name: str = ""  # this DRCS as nodes name it: its [link] listen address
    probe_servers: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None

    def _node(self, peer: PeerCredentials) -> None:
        """Node verbs speak for other users: only a root node daemon may call them."""
        if peer.uid != 0:
            raise eperm(f"uid {peer.uid} is not a DRC node daemon (they run as root)")

    @method("ss", "b", hook=NODE)
    def node_hello(self, peer: PeerCredentials, node: str, boot_id: str) -> bool:
        """A DRCC started: True (and its references are gone) when the node rebooted."""
        self._node(peer)
        if not 0 < len(boot_id) <= 64 or not boot_id.isprintable():
            raise einval("boot_id must be a printable id of 1..64 characters")
        with self.service.store.snapshot() as tx:
            known = tx.node_boot_id(_node_name(node))
        self.service.node_booted(node, boot_id)
        return known is not None and known != boot_id

    @method("a{sv}u", "a{sv}", hook=NODE)
    def node_acquire(self, peer: PeerCredentials, caller: dict, flags: int) -> dict[str, Any]:
        self._node(peer)
        return credential_dict(self.service.acquire(node_caller(caller), flags))

    @method("a{sv}u", "a{sv}", hook=NODE)
    def node_access(self, peer: PeerCredentials, caller: dict, credential: int) -> dict[str, Any]:
        self._node(peer)
        who = node_caller(caller)
        # member_uid: the uid DRCS admitted, signed with the answer (DRCC builds services for it)
        return {
            **credential_dict(self.service.access_credential(who, credential)),
            "member_uid": who.uid,
        }

    @method("a{sv}uuu", "", hook=NODE)
    def node_grant(
        self, peer: PeerCredentials, caller: dict, credential: int, target: int, flags: int
    ) -> None:
        self._node(peer)
        self.service.grant(node_caller(caller), credential, Target.from_flags(target, flags))

    @method("a{sv}uuu", "", hook=NODE)
    def node_revoke(
        self, peer: PeerCredentials, caller: dict, credential: int, target: int, flags: int
    ) -> None:
        self._node(peer)
        self.service.revoke(node_caller(caller), credential, Target.from_flags(target, flags))

    @method("a{sv}u", "b", hook=NODE)
    def node_release(self, peer: PeerCredentials, caller: dict, credential: int) -> bool:
        self._node(peer)
        return self.service.release(node_caller(caller), credential)

    @method("a{sv}u", "s", hook=NODE)
    def node_token(self, peer: PeerCredentials, caller: dict, credential: int) -> str:
        """A signed token for a credential the caller may access."""
        self._node(peer)
        if self.token_key is None:
            raise DrcError(Code.CRED_EXTERNAL_FAILURE, "DRCS has no token key configured")
        who = node_caller(caller)
        cred = self.service.get(who, credential)  # not found unless the caller may access it
        return issue_token(self.token_key, cred, now=time.time(), ttl=self.token_ttl)

    @method("saa{sv}", "au", hook=NODE)
    def node_token_references(
        self, peer: PeerCredentials, node: str, refs: list[dict]
    ) -> list[int]:
        """Batched report of accesses a DRCC admitted with tokens; returns those refused."""
        self._node(peer)
        _node_name(node)
        if len(refs) > MAX_BATCH:
            raise einval(f"at most {MAX_BATCH} references per report")
        batch = []
        for ref in refs:
            if not isinstance(ref, dict):
                raise einval("each reference must be a dictionary")
            caller = node_caller({**ref.get("caller", {}), "node": node})
            batch.append(
                (
                    caller,
                    check_uint32("credential", ref.get("credential")),
                    check_uint32("epoch", ref.get("epoch")),
                )
            )
        return self.service.add_token_references(batch)

    @method("sau", "au", hook=NODE)
    def node_jobs_ended(self, peer: PeerCredentials, node: str, jobs: list[int]) -> list[int]:
        """The jobs ended everywhere (an ALPS reservation's epilog runs once, on its login
        node): drop their references on every node."""
        self._node(peer)
        _node_name(node)
        if len(jobs) > MAX_JOBS_PER_CALL:
            raise einval(f"at most {MAX_JOBS_PER_CALL} jobs per call")
        return self.service.expire_jobs(check_uint32("job", j) for j in jobs)

    @method("sau", "au", hook=NODE)
    def node_jobs_ended_here(self, peer: PeerCredentials, node: str, jobs: list[int]) -> list[int]:
        """The jobs' epilog ran on ``node`` (Slurm's job_epilog runs on every node of a job):
        drop their references there only; a credential is freed when the last node's go.
        ``drc-jedi reconcile`` catches nodes whose epilog never reported."""
        self._node(peer)
        _node_name(node)
        if len(jobs) > MAX_JOBS_PER_CALL:
            raise einval(f"at most {MAX_JOBS_PER_CALL} jobs per call")
        return self.service.expire_jobs((check_uint32("job", j) for j in jobs), node=node)

    @method("sa(ut)", "au", hook=NODE)
    def node_processes_exited(self, peer: PeerCredentials, node: str, processes: list) -> list[int]:
        self._node(peer)
        if len(processes) > MAX_BATCH:
            raise einval(f"at most {MAX_BATCH} processes per report")
        procs = []
        for p in processes:
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise einval("each process must be (pid, start time)")
            procs.append((check_uint32("pid", p[0]), int(p[1])))
        return self.service.processes_exited(_node_name(node), procs)

    @method("s", "a(ut)", hook=NODE)
    def node_processes(self, peer: PeerCredentials, node: str) -> list[tuple[int, int]]:
        """Processes holding references on ``node``: a restarted DRCC re-checks them."""
        self._node(peer)
        return sorted(self.service.process_holders(_node_name(node)))

    @method("sau", "a(uu)", hook=NODE)
    def node_epochs(
        self, peer: PeerCredentials, node: str, credentials: list[int]
    ) -> list[tuple[int, int]]:
        """Current epochs (FREED for gone credentials): a DRCC resynchronising its tokens."""
        self._node(peer)
        if len(credentials) > MAX_BATCH:
            raise einval(f"at most {MAX_BATCH} credentials per call")
        with self.service.store.snapshot() as tx:
            live = {
                c.id: c.epoch
                for c in tx.list_credentials([check_uint32("credential", c) for c in credentials])
            }
        return [(c, live.get(c, FREED)) for c in credentials]

    @method("suu", "(sbua(uu))", hook=NODE)
    async def node_watch(
        self, peer: PeerCredentials, generation: str, since: int, timeout: int
    ) -> tuple[str, bool, int, list[tuple[int, int]]]:
        """Long poll: revocations and frees after ``since`` (all of them when generation
        differs or the log aged out: then ``complete`` is False and the DRCC resyncs)."""
        self._node(peer)
        log = self.changes
        if generation == log.generation:
            await log.wait(since, min(timeout, WATCH_TIMEOUT_MAX))
            if log.seq > since:  # let the rest of a burst gather (also one that arrived
                await asyncio.sleep(WATCH_COALESCE)  # while the node was asking again)
            complete, changes = log.since(since)
        else:
            complete, changes = False, []
        return (log.generation, complete, log.seq, changes)

    @method("ss", "", hook=NODE)
    def node_follow(self, peer: PeerCredentials, node: str, server: str) -> None:
        """A DRCC says which DRCS it follows now (after start-up or a fail-over)."""
        self._node(peer)
        if not isinstance(server, str) or not 0 < len(server) <= 255 or not server.isprintable():
            raise einval("server must be a printable host:port of 1..255 characters")
        with self.service.store.transaction() as tx:
            tx.set_node_server(_node_name(node), server, time.time())

    @method("", "a{sv}", hook=NODE)
    def server_info(self, peer: PeerCredentials) -> dict[str, Any]:
        """Who answers: ``drccli status`` asks every DRCS of the cluster this over the link."""
        self._node(peer)
        return {
            "server": self.name,
            "pid": os.getpid(),
            "generation": self.changes.generation,
            "nodes_connected": self.changes.followers,
        }


class ServerExports(NodeVerbs):
    def __init__(
        self,
        service: CredentialService,
        *,
        token_key: bytes | None = None,
        token_ttl: float = 3600.0,
    ) -> None:
        self.service = service
        self.token_key = token_key
        self.token_ttl = token_ttl
        self.changes = ChangeLog()
        service.listeners.append(self.changes.record)
        self.refusals = RefusalAudit()

    def refused(self, peer: PeerCredentials, verb: str, args: list, error: DrcError) -> None:
        """BusExporter's hook: audit and count a call refused on DRCS's own bus (drccli)."""
        self.refusals.record(verb, peer.uid, 0, "-", credential_of(verb, args), error)

    #: Set by drcs: D-Bus verbs waiting together share one commit (see drc.server.group).
    group: GroupCommit | None = None
    #: Whether release may join a group: not when freeing runs external cleanups (ALPS).
    group_frees: bool = False

    def _grouped(self, call: Callable[[], T], frees: bool = False) -> T | Awaitable[T]:
        """``call()`` now, or (grouping on) an awaitable of it that the bus exporter awaits."""
        if self.group is None or (frees and not self.group_frees):
            return call()
        return self.group.run(call)

    def _admin(self, peer: PeerCredentials, what: str) -> Caller:
        caller = direct_caller(peer)
        if not self.service.policy.is_admin(caller):
            raise eperm(f"uid {peer.uid} is not a DRC admin: {what} needs root or an admin group")
        return caller

    # -- user verbs ----------------------------------------------------------------------

    @method("u", "u")
    def acquire(self, peer: PeerCredentials, flags: int) -> int | Awaitable[int]:
        caller = direct_caller(peer)
        return self._grouped(lambda: self.service.acquire(caller, flags).id)

    @method("uuu", "")
    def grant(
        self, peer: PeerCredentials, credential: int, target: int, flags: int
    ) -> Awaitable[None] | None:
        caller, what = direct_caller(peer), Target.from_flags(target, flags)
        return self._grouped(lambda: self.service.grant(caller, credential, what))

    @method("uuu", "")
    def revoke(self, peer: PeerCredentials, credential: int, target: int, flags: int) -> None:
        self.service.revoke(direct_caller(peer), credential, Target.from_flags(target, flags))

    @method("uu", "uuuu")
    def access(self, peer: PeerCredentials, credential: int, flags: int) -> tuple[int, ...]:
        if flags:
            raise eflags(f"access takes no flags (got 0x{flags:x})")
        info = self.service.access(direct_caller(peer), credential)
        return (info.credential, info.cookie1, info.cookie2, info.ptag)

    @method("uu", "b")
    def release(self, peer: PeerCredentials, credential: int, flags: int) -> bool | Awaitable[bool]:
        if flags:
            raise eflags(f"release takes no flags (got 0x{flags:x})")
        caller = direct_caller(peer)
        return self._grouped(lambda: self.service.release(caller, credential), frees=True)

    @method("", "aa{sv}")
    def list(self, peer: PeerCredentials) -> list[dict[str, Any]]:
        creds = self.service.list(direct_caller(peer))
        holders = self.service.holders(creds)
        return [listed_dict(c, holders[c.id]) for c in creds]

    @method("u", "a{sv}")
    def show(self, peer: PeerCredentials, credential: int) -> dict[str, Any]:
        cred = self.service.get(direct_caller(peer), credential)
        return listed_dict(cred, self.service.holders([cred])[cred.id])

    @method("", "a(sut)")
    def limits(self, peer: PeerCredentials) -> list[tuple[str, int, int]]:
        return [(lim.scope.value, lim.id, lim.value) for lim in self.service.limits()]

    # -- admin verbs ---------------------------------------------------------------------

    @method("sut", "")
    def set_limit(self, peer: PeerCredentials, scope: str, id: int, value: int) -> None:
        self.service.set_limit(direct_caller(peer), _scope(scope), id, value)

    @method("su", "")
    def clear_limit(self, peer: PeerCredentials, scope: str, id: int) -> None:
        self.service.set_limit(direct_caller(peer), _scope(scope), id, None)

    @method("au", "au")
    def expire_jobs(self, peer: PeerCredentials, jobs: list[int]) -> list[int]:
        self._admin(peer, "expiring jobs")
        if len(jobs) > MAX_JOBS_PER_CALL:
            raise einval(f"at most {MAX_JOBS_PER_CALL} jobs per call, got {len(jobs)}")
        return self.service.expire_jobs(check_uint32("job", j) for j in jobs)

    @method("", "au")
    def outstanding_jobs(self, peer: PeerCredentials) -> list[int]:
        self._admin(peer, "listing outstanding jobs")
        return sorted(self.service.outstanding_jobs())

    @method("s", "au")
    def node_rebooted(self, peer: PeerCredentials, node: str) -> list[int]:
        self._admin(peer, "dropping a node's references")
        if not node or len(node) > 255 or not node.isprintable():
            raise einval("node must be a printable name of 1..255 characters")
        return self.service.node_rebooted(node)

    @method("", "aa{sv}")
    async def servers(self, peer: PeerCredentials) -> list[dict[str, Any]]:
        """Every DRCS of ``[link] servers``: reachable or not, and who answered (admins)."""
        self._admin(peer, "listing the DRCS of the cluster")
        if self.probe_servers is None:
            return [{"server": self.name, "reachable": True, "this": True, "detail": "this DRCS"}]
        return await self.probe_servers()

    @method("", "a{sv}")
    def status(self, peer: PeerCredentials) -> dict[str, Any]:
        self._admin(peer, "status")
        with self.service.store.snapshot() as tx:
            following = tx.node_servers()
        return {
            **self.service.describe(),
            "nodes_connected": self.changes.followers,
            "server": self.name,
            "nodes_following": [
                {"node": n, "server": srv, "since": since} for n, srv, since in following
            ],
        }


def _scope(name: str) -> LimitScope:
    try:
        return LimitScope(name)
    except ValueError:
        known = ", ".join(s.value for s in LimitScope)
        raise einval(f"unknown limit scope {name[:40]!r} (known: {known})") from None
