"""DRCC's decisions: answer from the node cache or a token, else ask DRCS over the DRC link.

Transport-free (the D-Bus exporter in :mod:`drc.node.exports` is a thin skin); async because
DRCS is a network hop away. Identities arrive already established from the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from drc.core.errors import Code, DrcError, eperm
from drc.core.model import FREED, AccessInfo, Caller, Flags, Holder, HolderKind
from drc.core.tokens import access_info as token_access_info
from drc.core.tokens import caller_may_use, verify_token
from drc.dispatch import Prompt
from drc.export import Stub, exported, unpack
from drc.link.failover import RETRY_PAUSE, request_budget
from drc.node.cache import Entry, NodeCache
from drc.node.slingshot import CxiServices
from drc.node.watch import ProcessWatcher
from drc.nodeverbs import WATCH_HEARTBEAT, NodeVerbs
from drc.wire import access_from_wire, caller_to_wire

log = logging.getLogger("drc.node")

#: A cache miss's question to DRCS (:meth:`NodeService.access_soon` sends it by name).
NODE_ACCESS = exported(NodeVerbs.node_access)

FLUSH_SECONDS = 0.2
FLUSH_BATCH = 200
#: Credentials per NodeEpochs (and in a NodeMoved): DRCS takes at most 10,000 a call.
EPOCHS_BATCH = 5000


class Upstream(Protocol):
    """How DRCC reaches DRCS: ``call(method, args) -> out args`` (the DRC link client). One
    that also has the link's fast lane, ``send(method, args, answered) -> bool``
    (:meth:`drc.link.failover.FailoverLink.send`), gets cache misses that way."""

    async def call(self, method: str, args: list[Any] | tuple[Any, ...] = ()) -> list[Any]: ...


def _entry(info: dict[str, Any]) -> Entry:
    return Entry(access_from_wire(info), flags=info["flags"], epoch=info["epoch"])


class NodeService:
    def __init__(
        self,
        node: str,
        boot_id: str,
        upstream: Upstream,
        watch_upstream: Upstream,
        *,
        token_key: bytes | None = None,
        clock: Callable[[], float] = time.time,
        slingshot: CxiServices | None = None,
        heartbeat: float = WATCH_HEARTBEAT,
    ) -> None:
        self.node, self.boot_id = node, boot_id
        self.heartbeat = heartbeat  # seconds DRCS answers the change feed within
        self.upstream, self.watch_upstream = upstream, watch_upstream
        # DRCS's node verbs, by the names and signatures they are declared with.
        self.drcs: Any = Stub(
            NodeVerbs, lambda m, args: self.upstream.call(m.name, args), asynchronous=True
        )
        self.feed: Any = Stub(
            NodeVerbs, lambda m, args: self.watch_upstream.call(m.name, args), asynchronous=True
        )
        self.token_key = token_key
        self.clock = clock
        self.cache = NodeCache()
        self.watcher = ProcessWatcher(self._process_exited)
        self._pending_tokens: list[tuple[Caller, int, int]] = []
        self._exited: list[tuple[int, int]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._flush_wakeup = asyncio.Event()
        self._in_flight: dict[tuple[int, Holder], asyncio.Future[None]] = {}

        self._stopping = False
        #: The DRCS the node follows now (``start``'s ``following``): the feed moves with it.
        self._following: Callable[[], str] | None = None
        self._without_moved: set[str] = set()  # DRCS older than NodeMoved (EPROTO)
        self.slingshot = slingshot  # the CXI service manager when the provider is slingshot
        self.synced = asyncio.Event()  # set once the change feed from DRCS is live
        #: Seconds one request may spend on DRCS in all ([link] timeout): verbs that ask DRCS
        #: more than once share it (request_budget), so they answer before their client's
        #: deadline.
        self.budget = math.inf
        #: Slurm runs job_epilog on every node of a job: each reports its own part. ALPS runs
        #: its epilog once per reservation: that one report ends the job everywhere.
        self.job_end_everywhere = False

    # -- life cycle ----------------------------------------------------------------------

    async def start(self, following: Callable[[], str] | None = None) -> bool:
        """Tell DRCS we are up (a new boot id drops what this node held), re-check holders.

        ``following()`` names the DRCS the node follows: then one NodeConnectFeed on the
        feed link says hello, records it, tells where the change feed stands and parks the
        first long poll there, so the node sends no poll of its own (:meth:`_connect`). True
        when DRCS recorded the DRCS followed (the node still follows the one it named). From
        then on, when the node moves to another DRCS the change feed tells it so (NodeMoved,
        :meth:`_watch_changes`)."""
        generation, seq, recorded = "", 0, False
        self._following = following
        if following is None:
            rebooted = await self.drcs.node_hello(self.node, self.boot_id)
        else:
            rebooted, generation, seq, recorded = await self._connect(following)
        if rebooted:
            log.warning("node %s rebooted: DRCS dropped its references", self.node)
        else:
            await self._recheck_processes()
        self._spawn(self._watch_changes(generation, seq))
        self._spawn(self._flush_loop())
        if self.slingshot is not None:
            await self.slingshot.reconcile()  # leftovers of a crash, a restart, a reboot
            self._spawn(self.slingshot.run(lambda: self._stopping))
        return recorded

    async def _connect(self, following: Callable[[], str]) -> tuple[bool, str, int, bool]:
        """(rebooted, generation, seq, recorded) of the first request to DRCS that says it.

        NodeConnectFeed goes over the feed link: DRCS parks the node's first NodeWatch(
        generation, seq, heartbeat) on that connection, and :meth:`_watch_changes`' first poll,
        asking exactly that, waits for its answer without sending a frame (drc.link.protocol,
        continued requests). A DRCS without it (EPROTO), or one that failed or did not answer
        within [link] timeout (the feed link does not retry on the next DRCS), gets NodeConnect
        over the calls link; a DRCS without that, NodeHello (the first poll then learns the
        feed's position)."""
        server = following()
        try:
            with request_budget(self.budget):  # as a call's, not the feed's longer wait
                rebooted, generation, seq = await self.feed.node_connect_feed(
                    self.node, self.boot_id, server, round(self.heartbeat)
                )
            return rebooted, generation, seq, following() == server
        except DrcError as e:
            if e.code not in (Code.EPROTO, Code.ECONNREFUSED):
                raise
        server = following()
        try:
            rebooted, generation, seq = await self.drcs.node_connect(
                self.node, self.boot_id, server
            )
            return rebooted, generation, seq, following() == server  # not if it moved since
        except DrcError as e:
            if e.code is not Code.EPROTO:  # "no method": a DRCS older than NodeConnect
                raise
        return await self.drcs.node_hello(self.node, self.boot_id), "", 0, False

    async def stop(self) -> None:
        self._stopping = True
        self._flush_wakeup.set()
        with contextlib.suppress(DrcError):
            await self._flush()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.watcher.close()
        if self.slingshot is not None:
            self.slingshot.close()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _recheck_processes(self) -> None:
        """Same boot, new DRCC: processes that held references while we were down may be gone."""
        holders = await self.drcs.node_processes(self.node)
        gone = [(pid, start) for pid, start in holders if not self.watcher.watch(pid, start)]
        if gone:
            log.info("%d process holder(s) exited while DRCC was down", len(gone))
            await self.drcs.node_processes_exited(self.node, gone)

    # -- verbs ---------------------------------------------------------------------------

    async def acquire(self, caller: Caller, flags: int) -> int:
        info = await self.drcs.node_acquire(self._wire(caller), flags)
        self._remember(caller, info)
        self.cache.counters["acquire_forwarded"] += 1
        return info["credential"]

    async def job_credential(self, caller: Caller) -> int:
        """The credential ``caller``'s job holds: from the cache when it took one here, else
        DRCS's answer (the job's lowest on any node: a step of a multi-node batch job on a
        node the batch step never ran on); 0 outside a job or when the job holds none."""
        if caller.holder.kind is not HolderKind.JOB:
            return 0
        # the lowest id among those it holds here, as DRCS picks the lowest on any node
        cached = self.cache.lowest_credential(caller.holder)
        if cached:
            self.cache.counters["job_credential_local"] += 1
            return cached
        self.cache.counters["job_credential_forwarded"] += 1
        return await self.drcs.node_job_credential(self._wire(caller))

    def cached(self, caller: Caller, credential: int) -> AccessInfo | None:
        """The synchronous hit path of :meth:`access`."""
        entry = self.cache.get(credential, caller.holder)
        if entry is None:
            return None
        self.cache.counters["access_local"] += 1
        return entry.info

    def access_soon(
        self, caller: Caller, credential: int, shape: Callable[[AccessInfo], Any]
    ) -> Prompt | None:
        """:meth:`access` after :meth:`cached` found nothing, sent to DRCS now: a future of
        ``shape(info)``, set in the loop turn that reads DRCS's answer. A miss's latency is
        mostly hops; a coroutine would add the loop turns of a task's steps to them. None when
        it cannot go so (the same pair is being asked already, no link is open yet):
        :meth:`access` then."""
        send = getattr(self.upstream, "send", None)
        key = (credential, caller.holder)
        if send is None or key in self._in_flight:
            return None
        loop = asyncio.get_running_loop()
        answer = Prompt(loop=loop)
        asked = self._in_flight[key] = loop.create_future()

        def answered(ok: list[Any] | None, error: BaseException | None) -> None:
            del self._in_flight[key]
            asked.set_result(None)
            if answer.done():  # DRCC stopping
                return
            if error is None:
                assert ok is not None
                try:
                    info = unpack(NODE_ACCESS, ok)
                    self.cache.counters["access_forwarded"] += 1
                    answer.set_result(shape(self._admitted(caller, info)))
                except Exception as err:  # as the coroutine's caller would hear it
                    answer.set_exception(err)
            elif isinstance(error, asyncio.CancelledError):
                answer.cancel()
            else:
                answer.set_exception(error)

        with request_budget(self.budget):
            sent = send(NODE_ACCESS.name, [self._wire(caller), credential], answered)
        if not sent:
            del self._in_flight[key]
            asked.set_result(None)
            return None
        return answer

    async def access(self, caller: Caller, credential: int) -> AccessInfo:
        """Cached associations are answered here; the first miss of a (credential, holder)
        goes to DRCS, and concurrent misses for the same pair wait for that one answer.

        The bus's miss path calls it once :meth:`cached` found nothing: the pair may have been
        cached since (an answer read before this coroutine's first step), so it looks again."""
        key = (credential, caller.holder)
        entry = self.cache.get(*key)
        if entry is not None:
            self.cache.counters["access_local"] += 1
            return entry.info
        with request_budget(self.budget):
            pending = self._in_flight.get(key)
            if pending is not None:
                await asyncio.shield(pending)
                if (entry := self.cache.get(*key)) is not None:
                    self.cache.counters["access_local"] += 1
                    return entry.info
            future = asyncio.get_running_loop().create_future()
            self._in_flight[key] = future
            try:
                info = await self.drcs.node_access(self._wire(caller), credential)
                self.cache.counters["access_forwarded"] += 1
                return self._admitted(caller, info)
            finally:
                del self._in_flight[key]
                future.set_result(None)

    async def access_with_token(self, caller: Caller, token: str) -> AccessInfo:
        """Decided here alone: signature, expiry, epoch, ACL. DRCS hears of it later."""
        if self.token_key is None:
            raise DrcError(Code.BAD_TOKEN, "this node has no token key: tokens are disabled")
        claims = verify_token(self.token_key, token, now=self.clock())
        if not self.cache.epoch_known(claims.credential):
            await self._learn_epoch(claims.credential)
        if not self.cache.token_epoch_current(claims.credential, claims.epoch):
            raise DrcError(
                Code.BAD_TOKEN,
                "token refused: the credential was revoked or freed since the token was issued",
            )
        if not caller_may_use(claims, caller):
            raise eperm(
                f"uid {caller.uid} (job {caller.job}) is not in the token's access list "
                f"for credential {claims.credential}"
            )
        entry = self.cache.get(claims.credential, caller.holder)
        if entry is None:
            entry = Entry(token_access_info(claims), flags=claims.flags, epoch=claims.epoch)
            self._check_node_binding(claims.credential, caller.holder, entry)
            self.cache.put(claims.credential, caller.holder, entry)
            self._watch_holder(caller.holder)
            self._pending_tokens.append((caller, claims.credential, claims.epoch))
            if len(self._pending_tokens) >= FLUSH_BATCH:
                self._flush_wakeup.set()
        self.cache.counters["token_access_local"] += 1
        return entry.info

    async def _learn_epoch(self, credential: int) -> None:
        """Ask DRCS for the current epoch of a credential this node has not heard of since it
        started (revoked or freed before then, the feed never told it). A token is never
        honoured on an epoch the node does not know: DRCS unreachable means refused."""
        try:
            answer = await self.drcs.node_epochs(self.node, [credential])
        except DrcError as e:
            if e.code is not Code.ECONNREFUSED:
                raise
            self.cache.counters["token_epoch_unknown"] += 1
            raise DrcError(
                Code.ECONNREFUSED,
                f"token refused for now: this node has not seen credential {credential} since "
                f"drcc started, and DRCS is unreachable to say whether it was revoked or freed "
                f"({e.message}); tokens keep working during a DRCS outage only for credentials "
                "the node already knew",
            ) from None
        for cred, epoch in answer:
            if cred == credential:
                self.cache.learn_epoch(cred, epoch)
        self.cache.counters["token_epoch_asked"] += 1

    async def token(self, caller: Caller, credential: int) -> str:
        return await self.drcs.node_token(self._wire(caller), credential)

    async def grant(self, caller: Caller, credential: int, target: int, flags: int) -> None:
        await self.drcs.node_grant(self._wire(caller), credential, target, flags)

    async def revoke(self, caller: Caller, credential: int, target: int, flags: int) -> None:
        await self.drcs.node_revoke(self._wire(caller), credential, target, flags)

    async def release(self, caller: Caller, credential: int) -> bool:
        with request_budget(self.budget):
            await self._flush()  # a token reference must reach DRCS before its release does
            self.cache.drop(credential, caller.holder)
            if self.slingshot is not None:
                self.slingshot.drop_holder(credential, caller.holder)
            return await self.drcs.node_release(self._wire(caller), credential)

    async def job_ended(self, job: int) -> list[int]:
        """Root hooks (SPANK/ALPS epilog): drop the job here, and on other nodes too when the
        hook runs once per job (``job_end_everywhere``: ALPS). Idempotent."""
        self._pending_tokens = [p for p in self._pending_tokens if p[0].job != job]
        self.cache.drop_job(job)
        if self.slingshot is not None:
            self.slingshot.drop_job(job)
        verb = (
            self.drcs.node_jobs_ended if self.job_end_everywhere else self.drcs.node_jobs_ended_here
        )
        freed = await verb(self.node, [job])
        log.info("job %d ended: freed credential(s) %s", job, freed or "none")
        return freed

    def counters(self) -> dict[str, int]:
        cxi = self.slingshot.describe() if self.slingshot else {}
        return {
            **self.cache.counters,
            "associations": len(self.cache.entries),
            "pending_token_references": len(self._pending_tokens),
            **{f"cxi_{k}": v for k, v in cxi.items()},
        }

    # -- slingshot -----------------------------------------------------------------------

    def _node_setup(self, caller: Caller, info: dict[str, Any]) -> None:
        """Node-side objects of the access DRCS just admitted (signed ``info``): CXI services."""
        if self.slingshot is not None and info.get("provider") == "slingshot":
            self.slingshot.ensure(info, caller.uid, caller.holder)

    async def access_slingshot(self, caller: Caller, credential: int) -> dict[str, Any]:
        """:meth:`access` plus the caller's CXI services: VNI, svc ids and devices by NIC.

        Services are only ever built from a DRCS answer, so a missing one is asked for again.
        """
        if self.slingshot is None:
            raise DrcError(
                Code.CRED_EXTERNAL_FAILURE,
                "this node does not run the slingshot provider ([server] provider)",
            )
        with request_budget(self.budget):
            info = await self.access(caller, credential)
            ids = self.slingshot.known(credential, caller.uid)
            if ids is None:
                answer = await self.drcs.node_access(self._wire(caller), credential)
                info = self._admitted(caller, answer)
                ids = self.slingshot.known(credential, caller.uid) or []
        return {
            "credential": info.credential,
            "vni": info.cookie1,
            "svc_ids": ids,
            "devices": list(self.slingshot.settings.nic_names),
        }

    # -- helpers -------------------------------------------------------------------------

    def _wire(self, caller: Caller) -> dict[str, Any]:
        return caller_to_wire(caller, self.node)

    def _admitted(self, caller: Caller, info: dict[str, Any]) -> AccessInfo:
        """An access DRCS admitted (its answer ``info``): the node's objects for it built
        (:meth:`_node_setup`), the association cached and its holder watched."""
        self._node_setup(caller, info)
        return self._remember(caller, info).info

    def _remember(self, caller: Caller, info: dict[str, Any]) -> Entry:
        entry = _entry(info)
        self.cache.put(info["credential"], caller.holder, entry)
        self._watch_holder(caller.holder)
        return entry

    def _watch_holder(self, holder: Holder) -> None:
        if holder.kind is HolderKind.PROCESS and not self.watcher.watch(holder.pid, holder.start):
            self._process_exited(holder.pid, holder.start)

    def _check_node_binding(self, credential: int, holder: Holder, entry: Entry) -> None:
        other = self.cache.other_tenant(credential, holder)
        if other is not None and not entry.flags & Flags.FLEX_CREDENTIAL:
            raise eperm(f"credential {credential} is not FLEX and is already used by {other}")

    def _process_exited(self, pid: int, start: int) -> None:
        self.cache.drop_process(pid, start)
        if self.slingshot is not None:
            self.slingshot.drop_process(pid, start)
        self._pending_tokens = [
            p for p in self._pending_tokens if (p[0].pid, p[0].holder.start) != (pid, start)
        ]
        self._exited.append((pid, start))
        self._flush_wakeup.set()

    async def _flush(self) -> None:
        """Report token references and exited processes to DRCS (batched, in the background)."""
        tokens, self._pending_tokens = (
            self._pending_tokens[:FLUSH_BATCH],
            self._pending_tokens[FLUSH_BATCH:],
        )
        if tokens:
            refs = [
                {"caller": self._wire(c), "credential": cred, "epoch": epoch}
                for c, cred, epoch in tokens
            ]
            try:
                refused = set(await self.drcs.node_token_references(self.node, refs))
            except DrcError:
                self._pending_tokens[:0] = tokens  # DRCS unreachable: keep them for later
                raise
            for caller, cred, _ in tokens:
                if cred in refused:
                    self.cache.drop(cred, caller.holder)
            self.cache.counters["token_references_reported"] += len(tokens) - len(refused)
        exited, self._exited = self._exited, []
        if exited:
            try:
                await self.drcs.node_processes_exited(self.node, exited)
            except DrcError:
                self._exited[:0] = exited
                raise

    async def _flush_loop(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_wakeup.wait(), FLUSH_SECONDS)
            self._flush_wakeup.clear()
            try:
                await self._flush()
            except DrcError as e:
                log.warning("cannot report to DRCS yet: %s", e)
                await asyncio.sleep(1)

    def _followed(self) -> str:
        """The DRCS the node follows now ("" when start was not told)."""
        return self._following() if self._following is not None else ""

    async def _watch_changes(self, generation: str = "", seq: int = 0) -> None:
        """Follow DRCS's revocations and frees with one long poll at a time, from where the
        feed stood at NodeConnect (or from nothing: the first poll then answers at once).

        A position means nothing to another DRCS's feed: when the node moved, a NodeMoved to
        the new DRCS records the follow, resyncs the epochs and gives its feed's position,
        so the next poll parks there at once (two round trips). Both go over the feed link,
        which does not retry a call on another DRCS (FailoverLink's ``follow_moves``): the
        position and the follow recorded are always the named DRCS's."""
        fed = self._followed()  # the DRCS whose feed ``generation, seq`` are a position in
        while not self._stopping:
            asked = fed  # the DRCS this turn asks
            try:
                here = self._followed()
                if here != fed:
                    asked = here
                    generation, seq = await self._moved(here)
                    fed = here
                gen, complete, new_seq, changes = await self.feed.node_watch(
                    generation, seq, round(self.heartbeat)
                )
                if (gen != generation or not complete) and self._followed() == fed:
                    await self._resync()  # (moved meanwhile: NodeMoved resyncs, next turn)
                for credential, epoch in changes:
                    self.cache.learn_epoch(credential, epoch)
                if self.slingshot is not None and any(e == FREED for _, e in changes):
                    self.slingshot.wake()  # destroy the services of freed credentials
                generation, seq = gen, new_seq
                self.synced.set()
            except DrcError as e:
                if self._followed() != asked:
                    # The DRCS asked failed and the node moved on: ask the next one now (its
                    # poll's DRCS died), or after a pause as between rounds over the servers
                    # (a NodeMoved failed: the next DRCS may be down too).
                    await asyncio.sleep(0 if asked == fed else RETRY_PAUSE)
                    continue
                log.warning("change feed from DRCS interrupted: %s", e)
                await asyncio.sleep(1)

    async def _moved(self, server: str) -> tuple[str, int]:
        """The node follows ``server`` now: one NodeMoved records it, resyncs the epochs of
        the credentials the node relies on and answers where that DRCS's feed stands. A DRCS
        older than NodeMoved (EPROTO "no method") gets NodeFollow, and the position is
        learnt from the first poll, answered at once, then NodeEpochs (the path before it)."""
        known = sorted(self.cache.known_credentials())
        if server not in self._without_moved:
            try:
                generation, seq, epochs = await self.feed.node_moved(
                    self.node, server, known[:EPOCHS_BATCH]
                )
            except DrcError as e:
                if e.code is not Code.EPROTO:
                    raise
                self._without_moved.add(server)
            else:
                for credential, epoch in epochs:
                    self.cache.learn_epoch(credential, epoch)
                await self._resync(known[EPOCHS_BATCH:])  # read after the position: fine
                return generation, seq
        await self.drcs.node_follow(self.node, server)
        return "", 0

    async def _resync(self, known: list[int] | None = None) -> None:
        """Learn the epoch of every credential the node relies on (or of ``known``)."""
        if known is None:
            known = sorted(self.cache.known_credentials())
        for i in range(0, len(known), EPOCHS_BATCH):
            batch = known[i : i + EPOCHS_BATCH]
            for credential, epoch in await self.drcs.node_epochs(self.node, batch):
                self.cache.learn_epoch(credential, epoch)
