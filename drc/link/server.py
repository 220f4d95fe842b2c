"""The DRCS end of the DRC link: authenticate every frame, dispatch, answer.

Over TCP each request frame is decoded by *this* host's munged, so its replay cache sees every
credential the server accepts: a captured frame sent again is refused before the method runs.
A response to a request that carries a key (every node daemon's) is authenticated with that
key, which only its MUNGE credential held (:mod:`drc.link.protocol`, keyed answers): no munged
call. Any other response is encoded by the server (it carries the DRCS uid) and restricted to
the requester's uid, so only that uid can read it. A change-feed answer that many nodes get alike
(a :class:`~drc.link.protocol.Shared` result) is sealed once and the same bytes go to each,
the request id outside (:mod:`drc.link.protocol`, shared answers): one MUNGE encode per batch,
not per node. A :class:`~drc.link.protocol.Continued` result is a first answer and, once that is
written, a second request's reply under the same id (:mod:`drc.link.protocol`, continued
requests). It is restricted to the node daemons' uid when they all run as one (the default,
root); otherwise to nobody in particular: it carries credential ids and epochs, which are no
secret (any user may probe ids, and a token is signed with a key the feed never carries).

Before a connection's first frame from a node daemon's uid it is *unauthenticated*, and
anyone who can reach the port can open one. So such connections are bounded (see
:class:`_Doorway`): each must authenticate within ``auth_timeout`` seconds (longer, bounded,
while its first bytes wait unread because DRCS is behind); there are at most
``max_unauthenticated`` of them and ``max_unauthenticated_per_host`` from one address (over
either, a new one pushes out the oldest); and the bytes they buffer are capped in total and per
address (over either, the oldest that buffer go first). A frame's sender is checked before its
payload is parsed: a payload from any other uid is never parsed, it is answered EPERM (when
its id can be read from a fixed prefix) and the connection closed.
"""

from __future__ import annotations

import asyncio
import contextvars
import fcntl
import inspect
import logging
import re
import socket
import sys
import termios
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from drc.core.errors import Code, DrcError
from drc.dispatch import as_drc_error
from drc.link.munge import WORKERS, Decoded, Munge, MungeError, MungeWorkers, attempt
from drc.link.protocol import (
    MAX_FRAME,
    BadRequest,
    Continued,
    FrameError,
    Request,
    Response,
    Shared,
    SharedAnswer,
    pack_frame,
    pack_keyed,
    pack_shared,
    split_frame,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LinkPeer:
    """Who sent a request, as MUNGE vouches for it (never as the peer claims)."""

    uid: int
    gid: int
    address: str = ""


#: What a handler gives back: the result list, or an awaitable of it. A future (a verb waiting
#: for its group commit, a long poll) is answered from its done callback with no task at all;
#: a coroutine runs in a task.
Reply = list[Any] | Awaitable[list[Any]]
#: ``handler(peer, method, args, rid)``: ``rid`` is the request's id when the node daemon made
#: it exactly-once (see :mod:`drc.link.protocol`), else None. A server made ``answers_later``
#: also hands it ``then(result, error)``: it may return :class:`Later` and answer by calling
#: ``then`` once, on the loop (no future of the link's own per waiting request).
Handler = Callable[..., "Reply | Later"]


class Later:
    """A handler's reply when it answers through ``then`` (:data:`Handler`): the future of the
    work, which the link cancels if the peer goes first (``then`` is then never called)."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[Any]) -> None:
        self.future = future


#: Told of every request a handler took on (method, seconds, error or None).
Observer = Callable[[str, float, BaseException | None], None]

#: The context the link's own future callbacks run in: one, not a copy per callback.
_CALLBACK_CONTEXT = contextvars.Context()

#: Seconds a connection may take to send its first frame from a node daemon's uid.
AUTH_TIMEOUT = 5.0
#: Unauthenticated connections at once, in all and from one address. A node daemon is
#: unauthenticated only between its connect and its first frame (milliseconds); a DRCS
#: holds ~one descriptor per connection and 10,000 nodes' worth of room. (Raised to 16,384,
#: 5,000 nodes failing over at once fared worse: more of them waited past the doorway's
#: 5 s while DRCS worked through the burst, and were closed and came round again.)
MAX_UNAUTHENTICATED = 4096
MAX_UNAUTHENTICATED_PER_HOST = 512
#: Connections the kernel may hold before DRCS accepts them. When a DRCS fails, every node
#: that followed it connects to another at once (5,000 of a 10,000-node cluster): asyncio's
#: default of 100 overflows, and each SYN dropped stalls its node a full retransmission (1 s,
#: then 3 s). The kernel caps it at net.core.somaxconn (4096 by default).
LISTEN_BACKLOG = 4096
#: Bytes unauthenticated connections may buffer (partial frames), in all and per address.
MAX_UNAUTHENTICATED_BYTES = 64 << 20
MAX_UNAUTHENTICATED_BYTES_PER_HOST = 8 << 20
#: The id of a request as our clients write it, read without parsing the payload.
_REQUEST_ID_PREFIX = re.compile(rb'\{"id":(\d{1,18})[,}]')


class LinkServer:
    """Serve ``handler`` on TCP ``host:port``, every request sealed with MUNGE.

    Requests are read in order per connection (so authentication and replay checks happen
    before anything runs) and then handled concurrently, at most ``max_in_flight`` per
    connection; responses go back as they complete, matched by id.

    A DRCS holds one connection per node daemon (10,000 on a large cluster), nearly all idle
    with one long poll parked. So a connection is a plain :class:`asyncio.Protocol`, with no
    reader task or coroutine chain, and a request answered by a future costs that future and
    its callback: these objects are what every full garbage collection walks, and the walk
    stops the whole server (see :mod:`drc.server.heap`).

    MUNGE calls run on ``munge_workers`` threads (:class:`~drc.link.munge.MungeWorkers`), so
    the loop works on while munged checks or seals a frame; with ``munge_inline_when_idle``, a
    lone request and its answer on an idle server are decoded and sealed on the loop (no thread
    hop: the latency of a cache miss). A connection's frames are decoded in parallel but taken
    in arrival order (a frame waits for those before it), and a frame waiting for its decode
    counts against ``max_in_flight`` like a running request.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str,
        port: int = 0,
        munge: Munge,
        allowed_uids: Iterable[int] = (0,),
        max_frame: int = MAX_FRAME,
        max_in_flight: int = 64,
        body_timeout: float = 30.0,
        auth_timeout: float = AUTH_TIMEOUT,
        max_unauthenticated: int = MAX_UNAUTHENTICATED,
        max_unauthenticated_per_host: int = MAX_UNAUTHENTICATED_PER_HOST,
        max_unauthenticated_bytes: int = MAX_UNAUTHENTICATED_BYTES,
        max_unauthenticated_bytes_per_host: int = MAX_UNAUTHENTICATED_BYTES_PER_HOST,
        observer: Observer | None = None,
        munge_workers: int = WORKERS,
        munge_inline_when_idle: bool = True,
        answers_later: bool = False,
    ) -> None:
        self.handler = handler
        self.answers_later = answers_later
        self.host, self.port = host, port
        self.munge = munge
        self.allowed_uids = frozenset(allowed_uids)
        #: Who may read a shared answer: the node daemons' uid when there is one (module doc).
        self.shared_uid = next(iter(self.allowed_uids)) if len(self.allowed_uids) == 1 else None
        self.max_frame = max_frame
        self.max_in_flight = max_in_flight
        self.body_timeout = body_timeout
        self.observer = observer
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.munge_workers = munge_workers
        self.workers = MungeWorkers(
            munge_workers, name="link-munge", inline_when_idle=munge_inline_when_idle
        )
        #: Shared answers being sealed -> the answers waiting for the seal (one seal a batch).
        self.sealing: dict[int, _Seal] = {}
        self.doorway = _Doorway(
            auth_timeout,
            max_unauthenticated,
            max_unauthenticated_per_host,
            max_unauthenticated_bytes,
            max_unauthenticated_bytes_per_host,
        )

    @property
    def connections(self) -> int:
        """Connections open right now (node daemons; metrics)."""
        return len(self._connections)

    @property
    def tcp_address(self) -> tuple[str, int]:
        """The bound (host, port), useful with ``port=0``."""
        for server in self._servers:
            for sock in server.sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    return sock.getsockname()[:2]
        raise RuntimeError("LinkServer has no TCP listener")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.workers.closed:  # started again after close()
            self.workers = MungeWorkers(
                self.munge_workers,
                name="link-munge",
                inline_when_idle=self.workers.inline_when_idle,
            )
        self._servers.append(
            await loop.create_server(
                lambda: _Connection(self),
                self.host,
                self.port,
                reuse_address=True,
                backlog=LISTEN_BACKLOG,
            )
        )

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, drop connections, let running handlers finish for ``grace`` s."""
        for server in self._servers:
            server.close()
        self.doorway.close()
        for connection in list(self._connections):
            connection.transport.close()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        self.sealing.clear()
        await self.workers.wait_closed()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> LinkServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _payload(self, response: Response) -> bytes:
        """The JSON of ``response`` (on the loop: results may be live objects); an error
        response in its place when it cannot be sent as it is."""
        try:
            return response.to_payload()
        except (TypeError, ValueError) as err:
            log.error("DRC link: response %d not serializable: %s", response.id, err)
            return _error(response.id, "DRC link: bad result")

    def _seal_frame(self, uid: int, request_id: int, payload: bytes) -> bytes:
        """The frame of a response sealed by MUNGE: encoded as the server, readable only by
        the requester ``uid``. Thread-safe."""
        return self._framed(
            request_id, payload, lambda body: self.munge.encode(body, uid_restriction=uid)
        )

    def _keyed_frame(self, request_id: int, key: bytes, payload: bytes) -> bytes:
        """The frame of a response keyed for its request (:mod:`drc.link.protocol`, keyed
        answers)."""
        return self._framed(request_id, payload, lambda body: pack_keyed(request_id, key, body))

    def _framed(self, request_id: int, payload: bytes, body_of: Callable[[bytes], bytes]) -> bytes:
        """The frame of ``body_of(payload)``; an error response in its place when too large."""
        body = body_of(payload)
        if len(body) > self.max_frame:
            text = f"DRC link: response of {len(body)} bytes exceeds the frame limit"
            log.error("%s", text)
            body = body_of(_error(request_id, text))
        return pack_frame(body, self.max_frame)

    def _shared_frame(self, request_id: int, shared: Shared) -> bytes | None:
        """The frame of a sealed shared answer for one request; None when too large (the
        per-request path then answers and says why)."""
        assert shared.sealed is not None
        body = pack_shared(request_id, shared.sealed)
        if len(body) > self.max_frame:
            return None
        return pack_frame(body, self.max_frame)


class _Doorway:
    """The connections that have not authenticated yet, and their bounds (module doc).

    No timer per connection: they wait in arrival order, which is deadline order, and one
    timer (running only while some wait) closes those whose deadline passed. What it closed
    or turned away is logged as one line per sweep, so a flood cannot flood the journal.

    The deadline counts from accept, but DRCS reads a frame only when its event loop comes
    to it: in a burst (a fail-over moves thousands of nodes at once) it may be seconds behind,
    with node daemons' first frames already waiting in the kernel. A connection whose time is
    up with bytes waiting unread (``FIONREAD``) is given ``timeout`` more, up to
    :attr:`SENT_WAIT` times ``timeout`` since accept; closing it would only make the node
    connect and wait again. One that sent nothing (or whose bytes DRCS read: a partial frame
    is the peer's delay, not ours) is closed at its deadline as before.
    """

    #: How many ``timeout`` periods in all a connection with unread bytes may wait.
    SENT_WAIT = 6

    def __init__(
        self,
        timeout: float,
        max_connections: int,
        max_per_host: int,
        max_bytes: int,
        max_bytes_per_host: int,
    ) -> None:
        self.timeout = timeout
        self.max_connections = max_connections
        self.max_per_host = max_per_host
        self.max_bytes = max_bytes
        self.max_bytes_per_host = max_bytes_per_host
        self.waiting: dict[_Connection, float] = {}  # -> deadline; insertion = deadline order
        self.latest: dict[_Connection, float] = {}  # -> the last moment it may be given more
        self.given_time = 0  # connections given more time since the last line
        self.hosts: Counter[str] = Counter()
        self.bytes = 0
        self.host_bytes: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()  # why connections were closed, since the last line
        self._timer: asyncio.TimerHandle | None = None

    def admit(self, conn: _Connection) -> None:
        """A new connection waits to authenticate. Over a cap, the oldest waiting one (of its
        address, for the per-address cap) goes: a node daemon that just connected is never
        the one turned away, and its first frame follows within milliseconds."""
        if self.hosts[conn.host] >= self.max_per_host:
            self._drop(self._oldest(conn.host), "pushed out by newer ones from their address")
        if len(self.waiting) >= self.max_connections:
            self._drop(next(iter(self.waiting)), "pushed out by newer ones")
        loop = asyncio.get_running_loop()
        now = loop.time()
        self.waiting[conn] = now + self.timeout
        self.latest[conn] = now + (self.SENT_WAIT - 1) * self.timeout
        self.hosts[conn.host] += 1
        if self._timer is None:
            self._timer = loop.call_later(self.timeout, self._sweep)

    def buffer(self, conn: _Connection, size: int) -> bool:
        """``conn`` buffers ``size`` bytes now. Over a byte cap, the oldest waiting connections
        with bytes buffered go first (of the address, for its cap); False if ``conn`` must."""
        host = conn.host
        grow = size - conn.counted
        while grow > 0:
            over_host = self.host_bytes[host] + grow > self.max_bytes_per_host
            if not over_host and self.bytes + grow <= self.max_bytes:
                break
            victim = next(
                (
                    c
                    for c in self.waiting
                    if c is not conn and c.counted and (c.host == host or not over_host)
                ),
                None,
            )
            self._drop(victim or conn, "over the byte cap")
            if victim is None:
                return False
        self.bytes += grow
        self.host_bytes[host] += grow
        conn.counted = size
        return True

    def _oldest(self, host: str) -> _Connection:
        return next(c for c in self.waiting if c.host == host)

    def leave(self, conn: _Connection) -> None:
        """``conn`` authenticated or went."""
        if self.waiting.pop(conn, None) is None:
            return
        del self.latest[conn]
        conn.counted, counted = 0, conn.counted
        self.bytes -= counted
        self.host_bytes[conn.host] -= counted
        if self.host_bytes[conn.host] <= 0:
            del self.host_bytes[conn.host]
        self.hosts[conn.host] -= 1
        if self.hosts[conn.host] <= 0:
            del self.hosts[conn.host]

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._report()

    def count(self, why: str) -> None:
        """A connection is closed for ``why``: the sweep's next line says how many were."""
        self.dropped[why] += 1
        if self._timer is None:  # within a second, even if none waits
            self._timer = asyncio.get_running_loop().call_later(1.0, self._sweep)

    def _drop(self, conn: _Connection, why: str) -> None:
        self.count(why)
        self.leave(conn)
        conn.transport.close()

    def _report(self) -> None:
        """One line: how many were closed for each reason (the 10 commonest), and how many
        were given more time because their first bytes were waiting unread."""
        if self.given_time:
            log.info(
                "DRC link: %d connections not read within %s s had their first bytes waiting: "
                "given more time",
                self.given_time,
                self.timeout,
            )
            self.given_time = 0
        if self.dropped:
            top = self.dropped.most_common(10)
            reasons = [f"{n} {why}" for why, n in top]
            others = sum(self.dropped.values()) - sum(n for _why, n in top)
            if others:
                reasons.append(f"{others} for other reasons")
            log.warning("DRC link: closed unauthenticated connections: %s", ", ".join(reasons))
            self.dropped.clear()

    @staticmethod
    def _unread(conn: _Connection) -> int:
        """Bytes the peer sent that DRCS has not read yet (0 if the socket cannot say)."""
        sock = conn.transport.get_extra_info("socket")
        if sock is None:
            return 0
        try:
            answer = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4)
        except (OSError, ValueError):
            return 0
        return int.from_bytes(answer, sys.byteorder, signed=True)

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.waiting:
            conn, deadline = next(iter(self.waiting.items()))
            if deadline > now:
                break
            if now < self.latest[conn] and self._unread(conn) > 0:
                # DRCS is behind, not the peer: wait on, at the end (now + timeout is the
                # latest deadline of all, so arrival order stays deadline order)
                del self.waiting[conn]
                self.waiting[conn] = now + self.timeout
                self.given_time += 1
                continue
            self.dropped[f"not authenticated within {self.timeout} s"] += 1
            self.leave(conn)
            conn.transport.close()
        self._report()
        if self.waiting:
            first = next(iter(self.waiting.values()))
            self._timer = loop.call_later(max(first - now, 0.0) + 0.05, self._sweep)


class _Connection(asyncio.Protocol):
    """One peer's connection: frames in, requests dispatched, responses out.

    Reading pauses while ``max_in_flight`` requests are unanswered (frames waiting for their
    decode included) or while the peer does not read its responses, so a peer that floods or
    stops reading stalls its own connection only. Before it authenticates, one frame at a time
    is decoded: its sender decides whether any other is.
    """

    __slots__ = (
        "address",
        "buffer",
        "counted",
        "decoding",
        "decoding_bytes",
        "host",
        "in_flight",
        "last_peer",
        "peer",
        "peer_reads",
        "reading",
        "server",
        "stall",
        "transport",
        "waiting",
    )

    def __init__(self, server: LinkServer) -> None:
        self.server = server
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.last_peer: LinkPeer | None = None  # MUNGE: the last frame's sender, reused
        self.address = ""
        self.host = ""  # the peer's address without the port: what per-address caps count
        self.counted = 0  # bytes of ``buffer`` the doorway counts (while unauthenticated)
        self.buffer = bytearray()
        self.decoding: deque[_Decode] = deque()  # frames at the workers, in arrival order
        self.decoding_bytes = 0  # their bytes: still unauthenticated ones for the doorway
        self.in_flight = 0
        self.waiting: set[asyncio.Future[Any]] = set()  # futures to cancel if the peer goes
        self.reading = True
        self.peer_reads = True  # False while the transport's write buffer is over its mark
        self.stall: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = self.server
        host, port = transport.get_extra_info("peername")[:2]
        self.address = f"{host}:{port}"
        self.host = host
        server.doorway.admit(self)
        server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server._connections.discard(self)
        self.server.doorway.leave(self)
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        self.buffer.clear()
        self.decoding.clear()  # their decodes finish on the workers and are dropped
        self.decoding_bytes = 0
        for future in list(self.waiting):
            future.cancel()  # a parked long poll: nobody is left to answer
        self.waiting.clear()

    def data_received(self, data: bytes) -> None:
        doorway = self.server.doorway
        if self in doorway.waiting:
            held = len(self.buffer) + self.decoding_bytes
            if not doorway.buffer(self, held + len(data)):
                return
            self.buffer += data
            self._take_frames()
            if self in doorway.waiting:
                doorway.buffer(self, len(self.buffer) + self.decoding_bytes)
            return
        self.buffer += data
        self._take_frames()

    def pause_writing(self) -> None:
        self.peer_reads = False
        self._flow()

    def resume_writing(self) -> None:
        self.peer_reads = True
        self._take_frames()

    # -- requests ----------------------------------------------------------------------------

    def _take_frames(self) -> None:
        """Dispatch the whole frames buffered, as far as the flow limits allow."""
        server = self.server
        partial = False  # the buffer ends inside a frame the peer has not finished sending
        while (
            self.in_flight < server.max_in_flight
            and self.peer_reads
            and not self.transport.is_closing()
            and not (self.decoding and self.last_peer is None)
        ):
            try:
                body = split_frame(self.buffer, server.max_frame)
            except FrameError as err:
                self._close(f"a bad frame ({err})", str(err))
                return
            if body is None:
                partial = bool(self.buffer)
                break
            if self._decode(body):
                self._take_decoded()
        self._flow()
        # A frame begun must be finished within body_timeout; frames held back by our own
        # limits are not the peer's fault.
        if partial:
            if self.stall is None:
                self.stall = asyncio.get_running_loop().call_later(
                    server.body_timeout, self._stalled
                )
        elif self.stall is not None:
            self.stall.cancel()
            self.stall = None

    def _flow(self) -> None:
        """Pause or resume reading from the peer as the limits say."""
        want = self.in_flight < self.server.max_in_flight and self.peer_reads
        if want != self.reading and not self.transport.is_closing():
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _stalled(self) -> None:
        self.stall = None
        log.warning(
            "DRC link %s: frame not complete after %s s; closing",
            self.address,
            self.server.body_timeout,
        )
        self.transport.close()

    def _decode(self, body: bytes) -> bool:
        """Hand a frame to the workers; it is taken when it and those before it are decoded.
        True if it was decoded at once, here."""
        job = _Decode(self, body)
        self.decoding.append(job)
        self.decoding_bytes += len(body)
        self.in_flight += 1
        if self.server.workers.submit(job):
            job.finished = True
            return True
        return False

    def _decoded(self) -> None:
        """Some frame's decode finished on a worker: take the decoded frames, read on."""
        self._take_decoded()
        if not self.transport.is_closing():
            self._take_frames()

    def _take_decoded(self) -> None:
        """Take the decoded frames at the head, in arrival order."""
        decoding = self.decoding
        while decoding and decoding[0].finished:
            if self.transport.is_closing():
                decoding.clear()
                self.decoding_bytes = 0
                return
            job = decoding.popleft()
            self.decoding_bytes -= len(job.body)
            self.in_flight -= 1
            self._request(job.decoded, job.error)

    def _request(self, decoded: Decoded | None, error: MungeError | None) -> None:
        server = self.server
        if decoded is None:
            # replayed, altered, expired, or meant for someone else: never run it
            self._close(f"a frame refused by MUNGE ({error})", f"frame refused: {error}")
            return
        peer = self.last_peer
        if peer is None or (peer.uid, peer.gid) != (decoded.uid, decoded.gid):
            if decoded.uid not in server.allowed_uids:
                # before its payload is parsed: only node daemons' payloads ever are
                self._refuse(LinkPeer(decoded.uid, decoded.gid, self.address), decoded.payload)
                return
            peer = self.last_peer = LinkPeer(decoded.uid, decoded.gid, self.address)
            server.doorway.leave(self)
        payload = decoded.payload
        try:
            request = Request.from_payload(payload)
        except BadRequest as err:
            if err.request_id is None:
                log.warning("DRC link %s uid %d: %s; closing", self.address, peer.uid, err)
                self.transport.close()
                return
            log.warning("DRC link %s uid %d: %s", self.address, peer.uid, err)
            self._send(
                peer, Response(err.request_id, error=Code.EINVAL.dbus_name, message=str(err))
            )
            return
        except FrameError as err:
            log.warning("DRC link %s uid %d: %s; closing", self.address, peer.uid, err)
            self.transport.close()
            return
        # a key that travelled in clear authenticates nothing: such a request's answer is sealed
        self._dispatch(peer, request, request.key if decoded.encrypted else None)

    def _refuse(self, peer: LinkPeer, payload: bytes) -> None:
        """A frame from a uid that is not a node daemon's: its payload is never parsed. EPERM
        to the id a fixed prefix gives (our clients write the id first), then close."""
        found = _REQUEST_ID_PREFIX.match(payload)
        if found:
            text = f"DRC link: uid {peer.uid} is not a node daemon"
            response = Response(int(found.group(1)), error=Code.EPERM.dbus_name, message=text)
            try:  # here on the loop, rare: the answer must be written before the close
                frame = self.server._seal_frame(peer.uid, response.id, response.to_payload())
                self.transport.write(frame)
            except MungeError as err:
                log.error("DRC link %s: cannot encode response: %s", self.address, err)
        what = f"uid {peer.uid} is not a node daemon"
        self._close(f"a frame from uid {peer.uid}, not a node daemon's", what)

    def _close(self, why: str, detail: str) -> None:
        """Close for a fault of the peer's. Before authentication anyone can cause one, so it
        is counted in the doorway's next summary line; after, it is a node daemon's fault,
        worth a line of its own."""
        doorway = self.server.doorway
        if self in doorway.waiting:
            doorway.count(why)
        else:
            log.warning("DRC link %s: %s; closing", self.address, detail)
        self.transport.close()

    def _dispatch(self, peer: LinkPeer, request: Request, key: bytes | None) -> None:
        """Run the handler for ``request``, answered with ``key`` (None: sealed)."""
        pending = _Pending(self, peer, request.id, request.method, key)
        handler, args = self.server.handler, (peer, request.method, request.args, request.rid)
        if self.server.answers_later:
            self._run(pending, handler, *args, pending.then)
        else:
            self._run(pending, handler, *args)

    def _run(self, pending: _Pending, call: Callable[..., Reply], *args: Any) -> None:
        """``call(*args)``, the reply to ``pending``: answer now, or when its future or task
        is done."""
        try:
            result = call(*args)
        except Exception as exc:  # refused before it ran (unknown verb, bad arguments)
            pending.started = None
            self._answer(pending, None, exc)
            return
        if type(result) is Later:  # answered through pending.then
            self.in_flight += 1
            pending.later = result.future
            self.waiting.add(result.future)
            return
        if isinstance(result, asyncio.Future):
            future: asyncio.Future[Any] = result
            self.waiting.add(future)
        elif inspect.isawaitable(result):
            future = asyncio.ensure_future(result)
            self.server._tasks.add(future)  # type: ignore[arg-type]
            future.add_done_callback(self.server._tasks.discard)
        else:
            self._answer(pending, result, None)
            return
        self.in_flight += 1
        future.add_done_callback(pending, context=_CALLBACK_CONTEXT)

    def _then(self, pending: _Pending, result: Any, error: BaseException | None) -> None:
        """A request answered through ``then`` (:class:`Later`), as :meth:`_done` answers."""
        self.in_flight -= 1
        self.waiting.discard(pending.later)  # type: ignore[arg-type]
        self._answer(pending, result, error)
        if not self.transport.is_closing():
            self._take_frames()

    def _done(self, pending: _Pending, future: asyncio.Future[Any]) -> None:
        self.in_flight -= 1
        self.waiting.discard(future)
        if future.cancelled():
            if not self.transport.is_closing():  # the server is closing
                self.transport.close()
            return
        error = future.exception()
        self._answer(pending, None if error else future.result(), error)
        if not self.transport.is_closing():
            self._take_frames()

    def _answer(self, pending: _Pending, result: Any, error: BaseException | None) -> None:
        """Send the response; the observer hears of every request the handler took on
        (not of one it refused at once: ``started`` is None)."""
        observer = self.server.observer
        if observer is not None and pending.started is not None:
            observer(pending.method, time.perf_counter() - pending.started, error)
        if error is not None and not isinstance(error, DrcError):
            log.error(
                "DRC link: %s from uid %d failed",
                pending.method,
                pending.peer.uid,
                exc_info=(type(error), error, error.__traceback__),
            )
        if (
            error is None
            and type(result) is list
            and len(result) == 1
            and type(result[0]) is Shared
        ):
            self._send_shared(pending, result[0])
            return
        if error is None and type(result) is Continued:
            follow = (pending, result) if result.then is not None else None
            if result.shared is not None:  # its answer is sealed with others' (a batch)
                self._send_shared(pending, result.shared(), follow, result.first)
                return
            self._send(pending.peer, _response(pending, result.first, None), follow, pending.key)
            return
        self._send(pending.peer, _response(pending, result, error), key=pending.key)

    def _send(
        self,
        peer: LinkPeer,
        response: Response,
        follow: tuple[_Pending, Continued] | None = None,
        key: bytes | None = None,
    ) -> None:
        """Send ``response``, with its request's ``key`` (at once) or sealed by MUNGE (on a
        worker); then ``follow``'s second answer is parked."""
        if self.transport.is_closing():
            return
        payload = self.server._payload(response)
        if key is not None:
            self._sealed(self.server._keyed_frame(response.id, key, payload), None, follow)
            return
        job = _Encode(self, peer.uid, response.id, payload, follow)
        if self.server.workers.submit(job):
            job.done()

    def _sealed(
        self,
        frame: bytes | None,
        error: MungeError | None,
        follow: tuple[_Pending, Continued] | None = None,
    ) -> None:
        """A response sealed on a worker: send it, unless the connection went meanwhile; then
        park the request it continues with, if any (only now, so the node reads the first
        answer before the second)."""
        if self.transport.is_closing():
            return
        if frame is None:
            log.error("DRC link %s: cannot encode response: %s; closing", self.address, error)
            self.transport.close()
            return
        self.transport.write(frame)
        if follow is not None:
            self._continue(*follow)

    def _continue(self, first: _Pending, continued: Continued) -> None:
        """The request ``first`` continues with (``continued.method``), under its id."""
        assert continued.then is not None
        follow = _Pending(self, first.peer, first.id, continued.method, first.key)
        self._run(follow, continued.then)

    def _send_shared(
        self,
        pending: _Pending,
        shared: Shared,
        follow: tuple[_Pending, Continued] | None = None,
        alone: list[Any] | None = None,
    ) -> None:
        """The same sealed bytes as every other request this answer answers (module doc);
        then ``follow``'s second answer is parked. ``alone``: this request's own answer, for
        the per-request path (an answer of a batch names every request of it)."""
        if self.transport.is_closing():
            return
        if shared.sealed is not None:
            self._send_sealed(pending, shared, follow, alone)
            return
        server = self.server
        seal = server.sealing.get(id(shared))
        if seal is None:
            try:
                payload = SharedAnswer(pending.method, shared.asked, [list(shared)]).to_payload()
            except (TypeError, ValueError):  # not JSON: the per-request path says why
                self._send_unshared(pending, shared, follow, alone)
                return
            seal = server.sealing[id(shared)] = _Seal(server, shared, payload)
            seal.waiting.append((self, pending, follow, alone))
            if server.workers.submit(seal):
                seal.done()
            return
        seal.waiting.append((self, pending, follow, alone))

    def _send_unshared(
        self,
        pending: _Pending,
        shared: Shared,
        follow: tuple[_Pending, Continued] | None,
        alone: list[Any] | None,
    ) -> None:
        """This request's own answer, sealed for it alone: the per-request path, when the
        shared one cannot be made (not JSON) or sent (no frame for it)."""
        own = [tuple(shared)] if alone is None else alone
        self._send(pending.peer, _response(pending, own, None), follow, pending.key)

    def _send_sealed(
        self,
        pending: _Pending,
        shared: Shared,
        follow: tuple[_Pending, Continued] | None = None,
        alone: list[Any] | None = None,
    ) -> None:
        """Send the sealed shared answer ``shared`` as the answer to ``pending``."""
        if self.transport.is_closing():
            return
        frame = self.server._shared_frame(pending.id, shared)
        if frame is None:
            self._send_unshared(pending, shared, follow, alone)
            return
        self.transport.write(frame)
        if follow is not None:
            self._continue(*follow)


class _Decode:
    """A request frame decoded on a worker (a :class:`~drc.link.munge.MungeJob`)."""

    __slots__ = ("body", "connection", "decoded", "error", "finished")

    def __init__(self, connection: _Connection, body: bytes) -> None:
        self.connection = connection
        self.body = body
        self.decoded: Decoded | None = None
        self.error: MungeError | None = None
        self.finished = False

    def run(self) -> None:
        munge = self.connection.server.munge
        self.decoded, self.error = attempt(lambda: munge.decode(self.body), "decode")

    def done(self) -> None:
        self.finished = True
        self.connection._decoded()


class _Encode:
    """A response sealed on a worker (and the request it continues with, if any)."""

    __slots__ = ("connection", "error", "follow", "frame", "payload", "request_id", "uid")

    def __init__(
        self,
        connection: _Connection,
        uid: int,
        request_id: int,
        payload: bytes,
        follow: tuple[_Pending, Continued] | None = None,
    ):
        self.connection = connection
        self.uid = uid
        self.request_id = request_id
        self.payload = payload
        self.follow = follow
        self.frame: bytes | None = None
        self.error: MungeError | None = None

    def run(self) -> None:
        server = self.connection.server
        self.frame, self.error = attempt(
            lambda: server._seal_frame(self.uid, self.request_id, self.payload), "encode"
        )

    def done(self) -> None:
        self.connection._sealed(self.frame, self.error, self.follow)


class _Seal:
    """A shared answer sealed once on a worker, then sent to every request waiting for it."""

    __slots__ = ("error", "payload", "server", "shared", "waiting")

    def __init__(self, server: LinkServer, shared: Shared, payload: bytes) -> None:
        self.server = server
        self.shared = shared
        self.payload = payload
        #: (connection, request, what it continues with, its own answer) for each waiting
        self.waiting: list[
            tuple[_Connection, _Pending, tuple[_Pending, Continued] | None, list[Any] | None]
        ] = []
        self.error: MungeError | None = None

    def run(self) -> None:
        server = self.server
        sealed, self.error = attempt(
            lambda: server.munge.encode(self.payload, uid_restriction=server.shared_uid), "encode"
        )
        if sealed is not None:
            self.shared.sealed = sealed  # read on the loop only after done()

    def done(self) -> None:
        self.server.sealing.pop(id(self.shared), None)
        for connection, pending, follow, alone in self.waiting:
            if self.error is None:
                connection._send_sealed(pending, self.shared, follow, alone)
            else:
                connection._sealed(None, self.error)
        self.waiting.clear()


class _Pending:
    """A request taken on: what its response needs. It is also the done callback of the
    request's future (one small object per parked request, not a partial and a bound method).
    """

    __slots__ = ("connection", "id", "key", "later", "method", "peer", "started")

    def __init__(
        self,
        connection: _Connection,
        peer: LinkPeer,
        request_id: int,
        method: str,
        key: bytes | None = None,
    ):
        self.connection = connection
        self.peer = peer
        self.id = request_id
        self.method = method
        self.key = key  # the request's answer key (None: its answer is sealed)
        self.started: float | None = time.perf_counter()
        self.later: asyncio.Future[Any] | None = None  # the work a Later reply waits for

    def __call__(self, future: asyncio.Future[Any]) -> None:
        self.connection._done(self, future)

    def then(self, result: Any, error: BaseException | None) -> None:
        """The answer of a request the handler answers through ``then`` (:class:`Later`)."""
        self.connection._then(self, result, error)


def _error(request_id: int, text: str) -> bytes:
    return Response(request_id, error=Code.EINVAL.dbus_name, message=text).to_payload()


def _response(pending: _Pending, result: Any, error: BaseException | None) -> Response:
    """The response to a request: its result, its DRC error, or an internal error."""
    if error is None:
        try:
            return Response(pending.id, ok=list(result))
        except TypeError:
            error = TypeError(f"handler answered {type(result).__name__}, not a list")
    refused = as_drc_error(pending.method, error)  # the one mapping, as every transport's
    return Response(pending.id, error=refused.code.dbus_name, message=refused.message)
