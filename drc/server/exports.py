"""``org.drc.Server``: the DRCS service objects the exporters publish.

:class:`ServerExports` holds the verbs of users and admins (drccli, scripts; on DRCS's bus);
:class:`ServerNodeVerbs` implements the node verbs declared in :mod:`drc.nodeverbs` (on the
DRC link, and on the bus for a DRCC on the service node). Each method turns the transport's
kernel-verified peer into a :class:`Caller`, validates its arguments and calls the core; the
wire forms of callers and credentials are :mod:`drc.wire`'s. A verb that writes the store
passes its :class:`~drc.core.ports.Unit` (the request to record, the batch it runs in) on to
the core: node verbs take it from the dispatcher (keyword ``unit``), user verbs from
:meth:`ServerExports._in_store`. Direct callers (drccli, scripts
on the service node) act outside any job: their references are *pins* of their uid that last
until they release them — the paper's "acquire, then grant, list, release in separate commands".
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from drc.core.errors import Code, DrcError, eflags, einval, eperm
from drc.core.model import FREED, Caller, Holder, LimitScope, Target, check_uint32
from drc.core.ports import Unit
from drc.core.service import CredentialService, check_move
from drc.dispatch import shares_commit
from drc.export import ExportedMethod, PeerCredentials, exported
from drc.nodeverbs import WATCH_TIMEOUT_MAX, NodeVerbs
from drc.procfs import connecting_process
from drc.refusals import RefusalAudit, credential_of
from drc.server.changes import Answer, ChangeLog
from drc.server.group import GroupCommit
from drc.server.slingshot import SlingshotNodeVerbs
from drc.serververbs import BUS_NAME as BUS_NAME  # the bus address BUS_OBJECTS are served on
from drc.serververbs import INTERFACE as INTERFACE
from drc.serververbs import OBJECT_PATH as OBJECT_PATH
from drc.serververbs import ServerVerbs
from drc.wire import (
    access_to_tuple,
    caller_from_wire,
    credential_to_wire,
    listed_to_wire,
    node_name,
)

T = TypeVar("T")
MAX_JOBS_PER_CALL = 100_000
MAX_BATCH = 10_000
#: How long ``status`` waits for the store before answering from its last reading.
STATUS_STORE_WAIT = 0.5
Listed = list[dict[str, Any]]


ROOT = Caller(uid=0, gid=0)


#: The primary gid of each bus connection, read on its first call from the process that opened
#: it (:func:`drc.procfs.connecting_process`: a reused pid is refused). Weak keys: an
#: entry lives as long as the bus exporter's peer-credential cache holds that connection's
#: credentials (dropped when its unique name loses its owner), so it can never pass to
#: another process. Why caching is safe: the uid and supplementary gids the bus reports are
#: already what the kernel said when the connection was made, so the whole identity is now
#: consistently that of the connection's first call; a process that later changes its gid
#: (setegid, exec of a setgid program keeping the socket) keeps the identity it connected
#: with, as it already kept its uid and groups. Reading /proc cost ~25 us on every call.
_connection_gids: weakref.WeakKeyDictionary[PeerCredentials, int] = weakref.WeakKeyDictionary()


def _check_credential_batch(credentials: list[int]) -> None:
    if len(credentials) > MAX_BATCH:
        raise einval(f"at most {MAX_BATCH} credentials per call")


def _epochs_answer(credentials: list[int], live: dict[int, int]) -> list[tuple[int, int]]:
    """(credential, epoch) of each one asked, FREED for those gone (NodeEpochs, NodeMoved)."""
    return [(c, live.get(c, FREED)) for c in credentials]


def _connection_gid(peer: PeerCredentials) -> int:
    gid = _connection_gids.get(peer)
    if gid is None:
        gid = _connection_gids[peer] = connecting_process(peer).gid
    return gid


def direct_caller(peer: PeerCredentials) -> Caller:
    return Caller(
        uid=peer.uid,
        gid=_connection_gid(peer),
        gids=peer.gids,
        pid=peer.pid,
        holder=Holder.pin(peer.uid),
    )


#: NodeMoved's answer: where the change feed stood, the epochs asked.
Moved = tuple[str, int, list[tuple[int, int]]]


@dataclass(eq=False)
class _Move:
    """One NodeMoved waiting to be gathered with others (ServerNodeVerbs.node_moved)."""

    node: str
    server: str
    credentials: list[int]
    answer: asyncio.Future[Moved] | None = None


@dataclass(eq=False)
class _MoveRun:
    """The moves one call of the group commit took (set on the store thread)."""

    moves: list[_Move] = field(default_factory=list)
    settled: bool = False  # answered on the loop: the store thread takes no move for it


class ServerNodeVerbs(SlingshotNodeVerbs, NodeVerbs):
    """The verbs node daemons (DRCC) call, over the DRC link or the bus, for their callers.

    Names and signatures are declared in :class:`drc.nodeverbs.NodeVerbs`; the methods here
    override the declarations (and so are exported under them).
    """

    def __init__(
        self,
        service: CredentialService,
        changes: ChangeLog,
        *,
        token_key: bytes | None = None,
        token_ttl: float = 3600.0,
    ) -> None:
        self.service = service
        self.changes = changes
        self.token_key = token_key
        self.token_ttl = token_ttl
        self.name = ""  # this DRCS as nodes name it: its [link] listen address
        #: drcs's group commit (set with ServerExports.group): NodeMoved runs on its thread.
        self.group: GroupCommit | None = None
        self._moves: list[_Move] = []  # NodeMoved calls waiting to be gathered
        self._moves_lock = threading.Lock()  # the loop appends, the store thread takes
        self._moving: asyncio.Future[Any] | None = None  # the group's call for them

    def _node(self, peer: PeerCredentials) -> None:
        """Node verbs speak for other users: only a root node daemon may call them."""
        if peer.uid != 0:
            raise eperm(f"uid {peer.uid} is not a DRC node daemon (they run as root)")

    def node_hello(
        self, peer: PeerCredentials, node: str, boot_id: str, *, unit: Unit | None = None
    ) -> bool:
        """A DRCC started: True (and its references are gone) when the node rebooted."""
        self._node(peer)
        return self.service.node_hello(node_name(node), boot_id, unit)[0]

    def node_connect(
        self,
        peer: PeerCredentials,
        node: str,
        boot_id: str,
        server: str,
        *,
        unit: Unit | None = None,
    ) -> tuple[bool, str, int]:
        """NodeHello and NodeFollow at once, with the change feed's position. Read before the
        transaction: a change it commits, or any committed after, comes after ``seq`` and
        reaches the node's first poll."""
        self._node(peer)
        generation, seq = self.changes.generation, self.changes.seq
        rebooted = self.service.node_hello(node_name(node), boot_id, unit, server=server)[0]
        return rebooted, generation, seq

    def node_connect_feed(
        self,
        peer: PeerCredentials,
        node: str,
        boot_id: str,
        server: str,
        timeout: int,
        *,
        unit: Unit | None = None,
    ) -> tuple[bool, str, int]:
        """NodeConnect; the link parks the node's first poll from the position answered
        (:func:`drc.server.link_exporter.link_server`)."""
        return self.node_connect(peer, node, boot_id, server, unit=unit)

    def node_acquire(
        self, peer: PeerCredentials, caller: dict, flags: int, *, unit: Unit | None = None
    ) -> dict[str, Any]:
        self._node(peer)
        return credential_to_wire(self.service.acquire(caller_from_wire(caller), flags, unit))

    def node_access(
        self, peer: PeerCredentials, caller: dict, credential: int, *, unit: Unit | None = None
    ) -> dict[str, Any]:
        self._node(peer)
        who = caller_from_wire(caller)
        # member_uid: the uid DRCS admitted, signed with the answer (DRCC builds services for it)
        return {
            **credential_to_wire(self.service.access_credential(who, credential, unit)),
            "member_uid": who.uid,
        }

    def node_job_credential(self, peer: PeerCredentials, caller: dict) -> int:
        """A step on a node where its job took nothing yet: the job's credential, or 0."""
        self._node(peer)
        return self.service.job_credential(caller_from_wire(caller))

    def node_grant(
        self,
        peer: PeerCredentials,
        caller: dict,
        credential: int,
        target: int,
        flags: int,
        *,
        unit: Unit | None = None,
    ) -> None:
        self._node(peer)
        what = Target.from_flags(target, flags)
        self.service.grant(caller_from_wire(caller), credential, what, unit)

    def node_revoke(
        self,
        peer: PeerCredentials,
        caller: dict,
        credential: int,
        target: int,
        flags: int,
        *,
        unit: Unit | None = None,
    ) -> None:
        self._node(peer)
        what = Target.from_flags(target, flags)
        self.service.revoke(caller_from_wire(caller), credential, what, unit)

    def node_release(
        self, peer: PeerCredentials, caller: dict, credential: int, *, unit: Unit | None = None
    ) -> bool:
        self._node(peer)
        return self.service.release(caller_from_wire(caller), credential, unit)

    def node_token(self, peer: PeerCredentials, caller: dict, credential: int) -> str:
        """A signed token for a credential the caller may access."""
        self._node(peer)
        return self.service.token(
            caller_from_wire(caller), credential, self.token_key, self.token_ttl
        )

    def node_token_references(
        self, peer: PeerCredentials, node: str, refs: list[dict], *, unit: Unit | None = None
    ) -> list[int]:
        """Batched report of accesses a DRCC admitted with tokens; returns those refused."""
        self._node(peer)
        node_name(node)
        if len(refs) > MAX_BATCH:
            raise einval(f"at most {MAX_BATCH} references per report")
        batch = []
        for ref in refs:
            if not isinstance(ref, dict):
                raise einval("each reference must be a dictionary")
            caller = caller_from_wire({**ref.get("caller", {}), "node": node})
            batch.append(
                (
                    caller,
                    check_uint32("credential", ref.get("credential")),
                    check_uint32("epoch", ref.get("epoch")),
                )
            )
        return self.service.add_token_references(batch, unit)

    def node_jobs_ended(
        self, peer: PeerCredentials, node: str, jobs: list[int], *, unit: Unit | None = None
    ) -> list[int]:
        """The jobs ended everywhere (an ALPS reservation's epilog runs once, on its login
        node): drop their references on every node."""
        self._node(peer)
        node_name(node)
        if len(jobs) > MAX_JOBS_PER_CALL:
            raise einval(f"at most {MAX_JOBS_PER_CALL} jobs per call")
        return self.service.expire_jobs((check_uint32("job", j) for j in jobs), unit=unit)

    def node_jobs_ended_here(
        self, peer: PeerCredentials, node: str, jobs: list[int], *, unit: Unit | None = None
    ) -> list[int]:
        """The jobs' epilog ran on ``node`` (Slurm's job_epilog runs on every node of a job):
        drop their references there only; a credential is freed when the last node's go.
        ``drc-jedi reconcile`` catches nodes whose epilog never reported."""
        self._node(peer)
        node_name(node)
        if len(jobs) > MAX_JOBS_PER_CALL:
            raise einval(f"at most {MAX_JOBS_PER_CALL} jobs per call")
        ended = (check_uint32("job", j) for j in jobs)
        return self.service.expire_jobs(ended, node=node, unit=unit)

    def node_processes_exited(
        self, peer: PeerCredentials, node: str, processes: list, *, unit: Unit | None = None
    ) -> list[int]:
        self._node(peer)
        if len(processes) > MAX_BATCH:
            raise einval(f"at most {MAX_BATCH} processes per report")
        procs = []
        for p in processes:
            if not isinstance(p, (list, tuple)) or len(p) != 2:
                raise einval("each process must be (pid, start time)")
            procs.append((check_uint32("pid", p[0]), int(p[1])))
        return self.service.processes_exited(node_name(node), procs, unit)

    def node_processes(self, peer: PeerCredentials, node: str) -> list[tuple[int, int]]:
        """Processes holding references on ``node``: a restarted DRCC re-checks them."""
        self._node(peer)
        return sorted(self.service.process_holders(node_name(node)))

    def node_epochs(
        self, peer: PeerCredentials, node: str, credentials: list[int]
    ) -> list[tuple[int, int]]:
        """Current epochs (FREED for gone credentials): a DRCC resynchronising its tokens."""
        self._node(peer)
        _check_credential_batch(credentials)
        return _epochs_answer(credentials, self.service.epochs(credentials))

    def node_moved(
        self,
        peer: PeerCredentials,
        node: str,
        server: str,
        credentials: list[int],
        *,
        unit: Unit | None = None,
    ) -> Moved | asyncio.Future[Moved]:
        """NodeFollow, the change feed's position and NodeEpochs at once.

        When a DRCS fails, thousands of its nodes move here at once, into the storm of
        accesses they and the others make: one transaction each (four PostgreSQL round trips)
        queued in arrival order among the accesses made every move wait for the storm. So the
        moves waiting are gathered (checked each on its own first): one call of the group
        commit, queued ahead of the calls waiting as long as such calls take less than half
        the store thread's time (:meth:`GroupCommit.soon`), takes every move
        that arrived by the time the store thread comes to it and runs them in one
        transaction (:meth:`CredentialService.nodes_moved`); the next gathers those that
        arrived meanwhile. The position is read on the store thread before that transaction,
        as NodeConnect's: a change it missed was committed after, so it comes after ``seq``
        and reaches the node's first poll, while every change committed before is in the
        epochs read. ``unit`` (on the loop: no batch; not exactly-once: no request) serves
        only without a group commit (tests of the verbs alone), where the move runs now."""
        self._node(peer)
        _check_credential_batch(credentials)
        move = _Move(node_name(node), server, check_move(server, credentials))
        if self.group is None:
            return self._run_moves(_MoveRun([move]), unit.batch if unit else None)[0][1]
        move.answer = asyncio.get_running_loop().create_future()
        with self._moves_lock:
            self._moves.append(move)
        if self._moving is None:
            self._start_moves()
        return move.answer

    def _start_moves(self) -> None:
        """Hand the group commit one call for the moves waiting (on the loop)."""
        assert self.group is not None
        run = _MoveRun()
        self._moving = self.group.soon(lambda batch: self._run_moves(run, batch))
        self._moving.add_done_callback(lambda done: self._moves_done(run, done))

    def _run_moves(self, run: _MoveRun, batch: Any) -> list[tuple[_Move, Moved]]:
        """The moves taken (on the store thread): each one's answer, after one transaction.
        None are taken once the loop has settled the call (the group gave up on it: a store
        that did not answer in time): nobody would answer them."""
        with self._moves_lock:
            if not run.moves and not run.settled:
                run.moves, self._moves = self._moves, []
        if not run.moves:
            return []
        generation, seq = self.changes.generation, self.changes.seq
        live = self.service.nodes_moved(
            [(m.node, m.server, m.credentials) for m in run.moves], Unit(None, batch)
        )
        return [(m, (generation, seq, _epochs_answer(m.credentials, live))) for m in run.moves]

    def _moves_done(self, run: _MoveRun, done: asyncio.Future[list[tuple[_Move, Moved]]]) -> None:
        """Answer the moves the call took (on the loop), and start the next call if more wait.
        A call that failed answers its error to the moves it took and to those waiting (the
        store did not answer in time, or the batch failed: the nodes retry, as after any
        ECONNREFUSED), rather than being handed to a store that is stuck again at once."""
        self._moving = None
        with self._moves_lock:
            run.settled = True
            if done.cancelled() or done.exception() is not None:
                run.moves += self._moves
                self._moves = []
        if done.cancelled():
            error: BaseException | None = DrcError(Code.ECONNREFUSED, "DRCS is stopping")
        else:
            error = done.exception()
        answers = done.result() if error is None else [(m, None) for m in run.moves]
        for move, answer in answers:
            if move.answer is None or move.answer.done():
                continue
            if error is None:
                move.answer.set_result(answer)
            else:
                move.answer.set_exception(error)
        if self._moves:
            self._start_moves()

    def node_watch(
        self, peer: PeerCredentials, generation: str, since: int, timeout: int
    ) -> asyncio.Future[Answer]:
        """Long poll: revocations and frees after ``since`` (all of them when generation
        differs or the log aged out: then ``complete`` is False and the DRCC resyncs).
        A future, parked in the change log until a change or the timeout answers it (the
        node's heartbeat: it hears that this DRCS is alive, see drc.nodeverbs)."""
        self._node(peer)
        return self.changes.poll(generation, since, min(timeout, WATCH_TIMEOUT_MAX))

    def node_follow(
        self, peer: PeerCredentials, node: str, server: str, *, unit: Unit | None = None
    ) -> None:
        """A DRCC says which DRCS it follows now (after start-up or a fail-over)."""
        self._node(peer)
        self.service.node_follows(node_name(node), server, unit)

    def server_info(self, peer: PeerCredentials) -> dict[str, Any]:
        """Who answers: ``drccli status`` asks every DRCS of the cluster this over the link."""
        self._node(peer)
        return {
            "server": self.name,
            "pid": os.getpid(),
            "generation": self.changes.generation,
            "nodes_connected": self.changes.followers,
        }


class ServerExports(ServerVerbs):
    """The verbs of users and admins on DRCS's bus (declared in :mod:`drc.serververbs`);
    ``nodes`` is served beside them."""

    probe_servers: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None

    def __init__(
        self,
        service: CredentialService,
        *,
        token_key: bytes | None = None,
        token_ttl: float = 3600.0,
    ) -> None:
        self.service = service
        self.changes = ChangeLog()
        service.listeners.append(self.changes.record)
        self.refusals = RefusalAudit()
        self.nodes = ServerNodeVerbs(
            service, self.changes, token_key=token_key, token_ttl=token_ttl
        )

    @property
    def name(self) -> str:
        """This DRCS as nodes and ``drccli status`` name it: its [link] listen address."""
        return self.nodes.name

    @name.setter
    def name(self, value: str) -> None:
        self.nodes.name = value

    def refused(
        self, peer: PeerCredentials, verb: ExportedMethod, args: list, error: DrcError
    ) -> None:
        """The dispatcher's hook: audit and count a call refused on DRCS's bus (drccli) or on
        the DRC link (a node daemon's request: the caller is its wire dictionary)."""
        uid, job, node = peer.uid, 0, "-"
        caller = args[0] if args and isinstance(args[0], dict) else None
        if caller is not None and peer.sender.startswith("link:"):
            said = {k: v for k, v in caller.items() if type(v) is int}  # as the node said
            uid, job = said.get("uid", uid), said.get("job", 0)
            node = str(caller.get("node", peer.sender))[:64]
        self.refusals.record(verb.name, uid, job, node, credential_of(verb, args), error)

    @property
    def group(self) -> GroupCommit | None:
        """Set by drcs: D-Bus verbs waiting together share one commit (see
        drc.server.group); the node verbs' NodeMoved runs on it too."""
        return self.nodes.group

    @group.setter
    def group(self, value: GroupCommit | None) -> None:
        self.nodes.group = value

    #: The last status read from the store (what status answers while the store is silent).
    described: dict[str, Any] | None = None
    #: Whether release may join a group: not when freeing runs external cleanups (ALPS).
    group_frees: bool = False

    def _in_store(self, verb: Callable[..., Any], call: Callable[[Unit], T]) -> T | Awaitable[T]:
        """``call(unit)`` for ``verb`` (its declaration in :class:`ServerVerbs`): now when there
        is no group, else on the store thread, sharing a commit as the declaration says (the
        one policy of both transports, :func:`drc.dispatch.shares_commit`); ``unit`` carries
        the batch it runs in, for the core's transaction."""
        if self.group is None:
            return call(Unit())
        run = (
            self.group.submit
            if shares_commit(exported(verb), self.group_frees)
            else self.group.alone
        )
        return run(lambda batch: call(Unit(None, batch)))

    def _admin(self, peer: PeerCredentials, what: str) -> Caller:
        caller = direct_caller(peer)
        if not self.service.policy.is_admin(caller):
            raise eperm(f"uid {peer.uid} is not a DRC admin: {what} needs root or an admin group")
        return caller

    # -- user verbs ----------------------------------------------------------------------

    def acquire(self, peer: PeerCredentials, flags: int) -> int | Awaitable[int]:
        caller = direct_caller(peer)
        return self._in_store(
            ServerVerbs.acquire, lambda unit: self.service.acquire(caller, flags, unit).id
        )

    def grant(
        self, peer: PeerCredentials, credential: int, target: int, flags: int
    ) -> Awaitable[None] | None:
        caller, what = direct_caller(peer), Target.from_flags(target, flags)
        return self._in_store(
            ServerVerbs.grant, lambda unit: self.service.grant(caller, credential, what, unit)
        )

    def revoke(
        self, peer: PeerCredentials, credential: int, target: int, flags: int
    ) -> Awaitable[None] | None:
        caller, what = direct_caller(peer), Target.from_flags(target, flags)
        return self._in_store(
            ServerVerbs.revoke, lambda unit: self.service.revoke(caller, credential, what, unit)
        )

    def access(
        self, peer: PeerCredentials, credential: int, flags: int
    ) -> tuple[int, ...] | Awaitable[tuple[int, ...]]:
        if flags:
            raise eflags(f"access takes no flags (got 0x{flags:x})")
        caller = direct_caller(peer)
        return self._in_store(
            ServerVerbs.access,
            lambda unit: access_to_tuple(self.service.access(caller, credential, unit)),
        )

    def release(self, peer: PeerCredentials, credential: int, flags: int) -> bool | Awaitable[bool]:
        if flags:
            raise eflags(f"release takes no flags (got 0x{flags:x})")
        caller = direct_caller(peer)
        return self._in_store(
            ServerVerbs.release, lambda unit: self.service.release(caller, credential, unit)
        )

    def list(self, peer: PeerCredentials) -> Listed | Awaitable[Listed]:
        caller = direct_caller(peer)

        def listed(_: Unit) -> Listed:
            creds = self.service.list(caller)
            holders = self.service.holders(creds)
            return [listed_to_wire(c, holders[c.id]) for c in creds]

        return self._in_store(ServerVerbs.list, listed)

    def show(
        self, peer: PeerCredentials, credential: int
    ) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        caller = direct_caller(peer)

        def shown(_: Unit) -> dict[str, Any]:
            cred = self.service.get(caller, credential)
            return listed_to_wire(cred, self.service.holders([cred])[cred.id])

        return self._in_store(ServerVerbs.show, shown)

    def limits(self, peer: PeerCredentials) -> Any:
        return self._in_store(
            ServerVerbs.limits,
            lambda _: [(lim.scope.value, lim.id, lim.value) for lim in self.service.limits()],
        )

    # -- admin verbs ---------------------------------------------------------------------

    def set_limit(self, peer: PeerCredentials, scope: str, id: int, value: int) -> Any:
        caller, where = direct_caller(peer), _scope(scope)
        return self._in_store(
            ServerVerbs.set_limit,
            lambda unit: self.service.set_limit(caller, where, id, value, unit),
        )

    def clear_limit(self, peer: PeerCredentials, scope: str, id: int) -> Any:
        caller, where = direct_caller(peer), _scope(scope)
        return self._in_store(
            ServerVerbs.clear_limit,
            lambda unit: self.service.set_limit(caller, where, id, None, unit),
        )

    def expire_jobs(self, peer: PeerCredentials, jobs: list[int]) -> Any:
        self._admin(peer, "expiring jobs")
        if len(jobs) > MAX_JOBS_PER_CALL:
            raise einval(f"at most {MAX_JOBS_PER_CALL} jobs per call, got {len(jobs)}")
        ended = [check_uint32("job", j) for j in jobs]
        return self._in_store(
            ServerVerbs.expire_jobs, lambda unit: self.service.expire_jobs(ended, unit=unit)
        )

    def pins(self, peer: PeerCredentials) -> Any:
        """(pinning uid, credential, owner uid, state) of every pin: credentials held with no
        process or job behind them, which count against the pinning user's limits. Admins."""
        caller = direct_caller(peer)
        return self._in_store(
            ServerVerbs.pins,
            lambda _: [(uid, c.id, c.uid, c.state.value) for uid, c in self.service.pins(caller)],
        )

    def expire_pins(self, peer: PeerCredentials, uid: int) -> Any:
        """Drop every pin of ``uid``; the credentials freed (see the core's ``expire_pins``)."""
        caller = direct_caller(peer)
        return self._in_store(
            ServerVerbs.expire_pins, lambda unit: self.service.expire_pins(caller, uid, unit)
        )

    def outstanding_jobs(self, peer: PeerCredentials) -> Any:
        self._admin(peer, "listing outstanding jobs")
        return self._in_store(
            ServerVerbs.outstanding_jobs, lambda _: sorted(self.service.outstanding_jobs())
        )

    def node_rebooted(self, peer: PeerCredentials, node: str) -> Any:
        self._admin(peer, "dropping a node's references")
        if not node or len(node) > 255 or not node.isprintable():
            raise einval("node must be a printable name of 1..255 characters")
        return self._in_store(
            ServerVerbs.node_rebooted, lambda unit: self.service.node_rebooted(node, unit)
        )

    async def servers(self, peer: PeerCredentials) -> list[dict[str, Any]]:
        """Every DRCS of ``[link] servers``: reachable or not, and who answered (admins)."""
        self._admin(peer, "listing the DRCS of the cluster")
        if self.probe_servers is None:
            here = self.changes.followers
            return [
                {
                    "server": self.name,
                    "reachable": True,
                    "this": True,
                    "nodes_connected": here,
                    "detail": "this DRCS",
                }
            ]
        return await self.probe_servers()

    async def status(self, peer: PeerCredentials) -> dict[str, Any]:
        """Answers within :data:`STATUS_STORE_WAIT` whatever the store does: from the store
        when it answers in time, else from the last answer it gave, saying so."""
        self._admin(peer, "status")
        if self.group is None:
            self.described = self.store_status()
        elif self.group.health.answering:
            try:
                async with asyncio.timeout(STATUS_STORE_WAIT):
                    self.described = await self.group.alone(lambda _: self.store_status())
            except (TimeoutError, DrcError):
                pass  # the group's health says why
        described = self.described or {"store": {}, "provider": {}}
        health = self.group.health.as_dict() if self.group is not None else {"answering": True}
        return {
            **described,
            "store": {**described["store"], **health},
            "nodes_connected": self.changes.followers,
            "server": self.name,
        }

    def store_status(self) -> dict[str, Any]:
        """What status reads from the store (one snapshot's worth), with when it was read."""
        following = self.service.node_servers()
        described = self.service.describe()
        return {
            **described,
            "store": {**described["store"], "read_at": time.time()},  # type: ignore[dict-item]
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


#: What ``org.drc.Server`` serves on DRCS's bus, in the order BusExporter takes them.
BUS_OBJECTS: tuple[type, ...] = (ServerExports, ServerNodeVerbs)
