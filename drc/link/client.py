"""The DRCC end of the DRC link.

Calls are pipelined on one connection: each request gets a fresh id, and the connection (an
asyncio protocol) matches responses to waiting calls by id as it reads them, so a slow method
doesn't hold up the others. Requests are
MUNGE-encoded for ``server_uid`` only (a process squatting on the port can't read them), each
with a fresh key of its own inside. A response counts only if it is authenticated with the key
of the request pending under its id (:mod:`drc.link.protocol`, keyed answers: only a process
of ``server_uid`` could read the key), or if it decodes, on this host's munged, as coming from
``server_uid``. Any failure drops the connection (failing the calls waiting on it); the next
call reconnects.

A change-feed answer, or a connect's, may come as a *shared* response (:mod:`drc.link.protocol`):
one credential DRCS sealed for every node it answers alike, or for a batch of connects. It
counts only if it comes from ``server_uid`` and answers, fresh, the very request it names
(:meth:`SharedAnswer.answer_for`: the question asked, or the request's ``rid`` in a batch);
then, and only then, a credential this host's munged has seen before is accepted too. One that
does not answer the request is dropped and logged, and the call goes on waiting for its answer.

A *continued* request (:data:`~drc.link.protocol.CONTINUED`: ``NodeConnectFeed``) leaves a
second request parked at DRCS under its id once answered (its first long poll). The connection
notes that question as it takes the first answer, so a second answer read right behind it finds
its call; the next :meth:`LinkClient.call` asking exactly that question on that connection
waits for that answer instead of sending a frame.

With ``workers`` (:class:`~drc.link.munge.MungeWorkers`, shared by many clients: the cluster
simulator runs thousands of nodes in one process), the MUNGE calls run on worker threads and
responses are still taken in the order they arrived. A node daemon makes few calls at once and
keeps them on its loop: a thread hop would only add to a cache miss's latency.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from drc.core.errors import Code, DrcError
from drc.link.munge import UNREACHABLE, Decoded, Munge, MungeError, MungeWorkers, attempt
from drc.link.protocol import (
    ANSWER_SHAPES,
    CONTINUED,
    KEY_BYTES,
    MAX_FRAME,
    SHAREABLE,
    FrameError,
    Request,
    Response,
    SharedAnswer,
    open_keyed,
    pack_frame,
    split_frame,
    split_keyed,
    split_shared,
)

log = logging.getLogger(__name__)

#: Seconds a response frame may take to arrive whole once its first bytes did.
BODY_TIMEOUT = 30.0


#: Bytes one read may take: a thread's connections receive into one buffer of this size.
READ_SIZE = 64 * 1024
_scratch = threading.local()  # .buffer: the thread's read buffer (one loop per thread)


class _Connection(asyncio.BufferedProtocol):
    """One open stream and its pending calls. A protocol, as the server's connections are:
    each response reaches its call in the event-loop turn that read it, with no reader task
    (and no stream buffer) in between: on a cache miss, one loop turn fewer.

    A buffered one: the transport receives into the thread's read buffer and only a frame's
    bytes are copied out of it. A plain protocol's transport allocates 256 KiB for every
    read, which glibc maps and unmaps each time once it decided that size is for mmap: three
    system calls and a page fault on every answer a node daemon reads."""

    def __init__(self, client: LinkClient) -> None:
        self.client = client
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # connection_made
        self.buffer = bytearray()
        self.pending: dict[int, asyncio.Future[Response]] = {}
        self.keys: dict[int, bytes] = {}  # the answer key of each request pending (by id)
        #: Whether requests carry an answer key: False once the DRCS at the other end refused
        #: one as a DRCS older than keyed answers does (:func:`_refused_key`).
        self.keyed = True
        self.opening: deque[_Open] = deque()  # frames at the workers, in arrival order
        self.asked: dict[int, Request] = {}  # pending requests whose answer may be shared
        #: Requests DRCS parked under a continued request's id, no call waiting for them yet,
        #: and the future of their answer (set when it came: none was waiting yet).
        self.parked: dict[int, tuple[Request, asyncio.Future[Response]]] = {}
        self.follow_ups: set[int] = set()  # ids of parked requests not answered yet
        self.failure: DrcError | None = None
        loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = loop.create_future()  # set by connection_lost
        self.writable: asyncio.Future[None] | None = None  # while the peer does not read
        self.stall: asyncio.TimerHandle | None = None  # while a frame is half received

    @property
    def alive(self) -> bool:
        return self.failure is None and not self.transport.is_closing()

    def fail(self, error: DrcError) -> None:
        """Fail every waiting call with ``error`` and close; idempotent."""
        if self.failure is None:
            self.failure = error
        self.transport.close()
        for _follow, future in self.parked.values():
            future.cancel()  # no call took it: nobody to tell
        for future in self.pending.values():
            if not future.done():
                future.set_exception(self.failure)
        self.pending.clear()
        self.keys.clear()
        self.asked.clear()
        self.parked.clear()
        self.follow_ups.clear()
        self.opening.clear()

    async def drain(self) -> None:
        """Wait while the transport's write buffer is over its high-water mark."""
        if self.writable is not None:
            await asyncio.shield(self.writable)

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        client = self.client
        if isinstance(exc, OSError):
            reason = _os_reason(exc)
        elif self.buffer:
            reason = f"bad response: connection closed inside a frame ({len(self.buffer)} bytes in)"
        else:
            reason = "connection closed"
        self.fail(LinkDown(client.target, reason))
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        self.buffer.clear()
        self.resume_writing()
        if not self.closed.done():
            self.closed.set_result(None)

    def eof_received(self) -> bool:
        return False  # DRCS closed its end: close ours (connection_lost follows)

    def pause_writing(self) -> None:
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def get_buffer(self, sizehint: int) -> bytearray:
        scratch: bytearray | None = getattr(_scratch, "buffer", None)
        if scratch is None:
            scratch = _scratch.buffer = bytearray(READ_SIZE)
        return scratch

    def buffer_updated(self, nbytes: int) -> None:
        with memoryview(_scratch.buffer) as scratch:
            self.data_received(scratch[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        client = self.client
        self.buffer += data
        try:
            while (
                self.failure is None
                and (body := split_frame(self.buffer, client.max_frame)) is not None
            ):
                job = _Open(self, body)
                if client.workers is None:
                    job.run()
                    self._take(job)
                    continue
                self.opening.append(job)
                if job.keyed is not None or client.workers.submit(job):
                    job.finished = True  # (a keyed answer has nothing for munged)
                    self._opened()
        except FrameError as err:
            self.fail(LinkDown(client.target, f"bad response: {err}"))
        # A frame begun must be finished within BODY_TIMEOUT (a stalled DRCS must not pin a
        # half-read buffer, nor the calls waiting behind it, for ever).
        if self.buffer and self.failure is None:
            if self.stall is None:
                self.stall = asyncio.get_running_loop().call_later(BODY_TIMEOUT, self._stalled)
        elif self.stall is not None:
            self.stall.cancel()
            self.stall = None

    def _opened(self) -> None:
        """A frame decoded on a worker: take the decoded ones at the head, in arrival order."""
        opening = self.opening
        while opening and opening[0].finished and self.failure is None:
            self._take(opening.popleft())

    def _take(self, job: _Open) -> None:
        """A decoded response to its call (or the connection failed, if it is no good one)."""
        client = self.client
        try:
            if job.keyed is not None:
                response = self._keyed(*job.keyed)
                if response is None:
                    return
            elif job.shared is None:
                response = Response.from_payload(client._checked(job.decoded, job.error).payload)
            else:
                response = client._open_shared(self.asked.get(job.shared[0]), job)
                if response is None:
                    return
            request = self.asked.get(response.id)
            if request is not None and response.ok is not None and request.id in self.follow_ups:
                self.follow_ups.discard(request.id)  # a parked request's: check it is one
                shape = ANSWER_SHAPES.get(request.method)
                if shape is not None and not shape(response.ok):
                    raise FrameError(f"answer to {request.method} {response.id} is no answer of it")
            future = self.pending.pop(response.id, None)
            self.keys.pop(response.id, None)
            if future is None:
                log.debug("%s: response for unknown id %d dropped", client.target, response.id)
            elif not future.done():
                future.set_result(response)
                if request is not None and request.method in CONTINUED and response.ok:
                    self._continued(request, response.ok)
        except DrcError as err:
            self.fail(err)
        except FrameError as err:
            self.fail(LinkDown(client.target, f"bad response: {err}"))
        except Exception as err:  # a bug here must fail the calls, not hang them
            log.exception("%s: response reader failed", client.target)
            self.fail(LinkDown(client.target, str(err)))

    def _keyed(self, request_id: int, sealed: bytes) -> Response | None:
        """The response a keyed frame carries, once its MAC proved it is the answer to the
        request pending under its id (:class:`FrameError` if not); None when no request is
        pending under it (one given up on): dropped, as any answer to nobody."""
        key = self.keys.get(request_id)
        if key is None:
            log.debug("%s: response for unknown id %d dropped", self.client.target, request_id)
            return None
        response = Response.from_payload(open_keyed(request_id, sealed, key))
        if response.id != request_id:
            raise FrameError(f"keyed response {request_id} carries the answer to {response.id}")
        return response

    def _continued(self, request: Request, ok: list[Any]) -> None:
        """``request`` was answered ``ok``: wait for the request DRCS parked under its id."""
        follow = CONTINUED[request.method](request, ok)
        del self.asked[request.id]
        if follow is not None:
            if follow.key is not None:
                self.keys[follow.id] = follow.key  # answered under the same id and key
            future = self.pending[follow.id] = asyncio.get_running_loop().create_future()
            self.asked[follow.id] = follow
            self.parked[follow.id] = follow, future
            self.follow_ups.add(follow.id)

    def adopt(
        self, method: str, args: list[Any]
    ) -> tuple[Request, asyncio.Future[Response]] | None:
        """The parked request asking exactly ``method(*args)`` and the future of its answer,
        taken (None: there is none)."""
        for request_id, (follow, future) in self.parked.items():
            if follow.method == method and follow.args == args:
                del self.parked[request_id]
                return follow, future
        return None

    def _stalled(self) -> None:
        self.stall = None
        text = f"frame not complete after {BODY_TIMEOUT:g} s"
        self.fail(LinkDown(self.client.target, f"bad response: {text}"))


def _refused_key(response: Response) -> bool:
    """Whether ``response`` is a DRCS older than keyed answers refusing a request's "key"
    field, before anything ran (:meth:`drc.link.protocol.Request.from_payload` of that DRCS)."""
    return (
        response.error == Code.EINVAL.dbus_name
        and response.message.startswith("unknown request fields")
        and "'key'" in response.message
    )


class _Open:
    """A response frame decoded (on a worker, or at once)."""

    __slots__ = (
        "body",
        "connection",
        "decoded",
        "error",
        "finished",
        "keyed",
        "shared",
        "wanted",
    )

    def __init__(self, connection: _Connection, body: bytes) -> None:
        self.connection = connection
        self.body = body
        self.keyed = split_keyed(body)  # (request id, MAC and payload): nothing to decode
        self.shared = split_shared(body)  # (request id, credential) of a shared answer
        # a shared answer to no request waiting is dropped undecoded (module doc)
        self.wanted = self.keyed is None and (
            self.shared is None or self.shared[0] in connection.asked
        )
        self.decoded: Decoded | None = None
        self.error: MungeError | None = None
        self.finished = False

    def run(self) -> None:
        if not self.wanted:
            return
        munge, shared = self.connection.client.munge, self.shared
        if shared is None:
            self.decoded, self.error = attempt(lambda: munge.decode(self.body), "decode")
        else:
            self.decoded, self.error = attempt(
                lambda: munge.decode(shared[1], allow_replayed=True), "decode"
            )

    def done(self) -> None:
        self.finished = True
        self.connection._opened()


#: ``answered(ok, None)`` or ``answered(None, error)``: how :meth:`LinkClient.send` answers.
Answered = Callable[["list[Any] | None", "BaseException | None"], None]


class Unsent(Exception):
    """What :meth:`LinkClient.send` answers when its request never ran and can go again as
    it is, by :meth:`LinkClient.call` (a DRCS older than keyed answers refused the key)."""


class _Waiter:
    """A request sent by :meth:`LinkClient.send`, in its connection's ``pending`` where a
    call's future would be (the same three methods are all the connection uses): its answer
    goes to ``answered`` at once, in the callback that read it."""

    __slots__ = ("answered", "connection", "finished", "request_id", "timer")

    def __init__(self, connection: _Connection, request_id: int, answered: Answered) -> None:
        self.connection = connection
        self.request_id = request_id
        self.answered = answered
        self.finished = False
        self.timer: asyncio.TimerHandle | None = None

    def done(self) -> bool:
        return self.finished

    def set_result(self, response: Response) -> None:
        if self._finish():
            if response.error is None:
                self._tell(response.ok, None)
            elif _refused_key(response):
                # A DRCS older than keyed answers: the request never ran; call() asks again.
                self.connection.keyed = False
                self._tell(None, Unsent("the request's key was refused"))
            else:
                self._tell(None, DrcError.from_dbus(response.error, response.message))

    def set_exception(self, error: BaseException) -> None:
        if self._finish():
            self._tell(None, error)

    def _tell(self, ok: list[Any] | None, error: BaseException | None) -> None:
        """As a future's done callback: what goes wrong in it is logged, and is not the
        connection's (whose other calls would fail with it)."""
        try:
            self.answered(ok, error)
        except Exception:
            log.exception(
                "%s: answering request %d failed", self.connection.client.target, self.request_id
            )

    def expired(self, callers_deadline: bool) -> None:
        """No answer in time: the caller's deadline ends the wait, the link's fails the link
        (a late answer must not be mistaken for a later call's)."""
        conn, client = self.connection, self.connection.client
        if not callers_deadline:
            conn.fail(client._silent())
        elif self._finish():
            if conn.pending.get(self.request_id) is self:
                del conn.pending[self.request_id]
                conn.keys.pop(self.request_id, None)
            self._tell(None, TimeoutError())

    def _finish(self) -> bool:
        """True the first time: the one answer."""
        if self.finished:
            return False
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        return True


class _Seal:
    """A request sealed on a worker: then ``future`` has the credential or the MungeError."""

    __slots__ = ("cred", "error", "future", "munge", "payload", "uid")

    def __init__(self, munge: Munge, payload: bytes, uid: int) -> None:
        self.munge = munge
        self.payload = payload
        self.uid = uid
        self.cred = b""
        self.error: MungeError | None = None
        self.future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def run(self) -> None:
        cred, self.error = attempt(
            lambda: self.munge.encode(self.payload, uid_restriction=self.uid), "encode"
        )
        self.cred = cred or b""

    def done(self) -> None:
        if self.future.done():  # the call gave up (timed out, cancelled)
            return
        if self.error is not None:
            self.future.set_exception(self.error)
        else:
            self.future.set_result(self.cred)


# What to do when DRCS does not answer, for the admin reading a node's error.
DRCS_DOWN_HINT = " (is DRCS running? start drcs.service on the DRCS host)"
# The reason when this node's own munged is the one not answering: DRCS is not to blame.
LOCAL_MUNGE = "this node's munged"
LOCAL_MUNGE_HINT = " (start munge.service on this node)"


class LinkDown(DrcError):
    """ECONNREFUSED because the link itself failed (refused, closed, silent, garbled), not an
    error DRCS answered. ``reason`` says how, without the server's name: fail-over lists the
    reason of every server it tried in the one message the node's client reads."""

    def __init__(self, target: str, reason: str, hint: str = DRCS_DOWN_HINT) -> None:
        super().__init__(Code.ECONNREFUSED, f"{target}: {reason}{hint}")
        self.reason = reason


#: connect_ex's answers while a non-blocking connect goes on (EINTR: it goes on as well).
_IN_PROGRESS = frozenset({errno.EINPROGRESS, errno.EALREADY, errno.EINTR})


def _numeric_family(host: str) -> int | None:
    """AF_INET or AF_INET6 when ``host`` is an address written out, else None (a name)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


async def _connect_ended(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> int:
    """Wait for the non-blocking connect in progress on ``sock`` to end: its error (0: it
    connected). Not ``loop.sock_connect``, which calls connect() again, and fails with
    EISCONN when the handshake ended between the last look and that call."""
    ended = loop.create_future()
    fd = sock.fileno()
    loop.add_writer(fd, lambda: ended.done() or ended.set_result(None))
    try:
        await ended
    finally:
        loop.remove_writer(fd)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def _os_reason(err: OSError) -> str:
    """``connection refused``, ``no route to host`` …: what the socket said, in lower case."""
    text = os.strerror(err.errno) if err.errno else err.strerror or str(err) or repr(err)
    return text[:1].lower() + text[1:]


class LinkClient:
    """Call DRCS methods over TCP (``host``, ``port``), every request sealed with MUNGE.

    ``server_uid`` is the uid DRCS runs as; anything else answering is refused with EPERM.
    Unreachable or silent servers give ECONNREFUSED after ``timeout`` seconds. A call that
    timed out may still have run on the server. ``source``: the local address to connect from
    (a multi-homed node's; the cluster simulator gives each node its own loopback address, as
    DRCS counts unauthenticated connections per address). ``workers``: make the MUNGE calls on
    these threads (module doc).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        munge: Munge,
        server_uid: int,
        timeout: float = 5.0,
        max_frame: int = MAX_FRAME,
        source: str | None = None,
        workers: MungeWorkers | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.workers = workers
        self.source = source  # the local address to connect from (None: the kernel's choice)
        self.munge = munge
        self.server_uid = server_uid
        self.timeout = timeout
        self.max_frame = max_frame
        self.target = f"DRC link to {host}:{port}"
        self._ids = itertools.count(1)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Lock | None = None

    async def call(
        self,
        method: str,
        args: list[Any] | tuple[Any, ...] = (),
        *,
        rid: str | None = None,
        within: float | None = None,
    ) -> list[Any]:
        """Run ``method(*args)`` on DRCS; its result list, or the :class:`DrcError` it raised.

        ``rid`` makes the request exactly-once across retries (see :mod:`drc.link.protocol`).
        ``within``: the seconds the caller gives the call (a fail-over's deadline). When that
        ends before this link's own timeout, :class:`TimeoutError` is raised, as the caller's
        own ``asyncio.timeout`` would, and the connection is the caller's to judge; one timer
        serves both.
        """
        listed = list(args)
        conn: _Connection | None = None
        now = asyncio.get_running_loop().time()
        own = now + self.timeout
        until = own if within is None else min(own, now + within)
        try:
            async with asyncio.timeout_at(until):
                conn = await self._connected()
                parked = conn.adopt(method, listed) if conn.parked and not rid else None
                if parked is not None:  # asked already: its answer comes under that id
                    request, future = parked
                else:
                    key = os.urandom(KEY_BYTES) if conn.keyed else None
                    request = Request(next(self._ids), method, listed, rid, key)
                    future = asyncio.get_running_loop().create_future()
                    conn.pending[request.id] = future
                    if key is not None:
                        conn.keys[request.id] = key
                    if method in SHAREABLE or method in CONTINUED:
                        conn.asked[request.id] = request
                try:
                    if parked is None:
                        if self.workers is None:
                            sealed = self._seal(request)
                        else:
                            sealed = await self._seal_on_worker(request)
                        conn.transport.write(pack_frame(sealed, self.max_frame))
                        await conn.drain()
                    response = await future
                finally:
                    # (a continued request's entries are its parked request's by now)
                    if conn.pending.get(request.id) is future:
                        del conn.pending[request.id]
                        conn.keys.pop(request.id, None)
                    if conn.asked.get(request.id) is request:
                        del conn.asked[request.id]
        except TimeoutError:
            if until < own:
                raise  # the caller's deadline, not this link's
            error = self._silent()
            if conn is not None:
                conn.fail(error)  # a late answer must not be mistaken for a later call's
            raise error from None
        except OSError as err:
            error = LinkDown(self.target, _os_reason(err))
            if conn is not None:
                conn.fail(error)
            raise error from None
        except FrameError as err:  # our own request too large
            raise DrcError(Code.EINVAL, f"{self.target}: {err}") from None
        if response.error is not None:
            if request.key is not None and _refused_key(response):
                # A DRCS older than keyed answers (a rolling upgrade): the request never ran.
                # Its answers are sealed, as it always sealed them; asked again without a key.
                conn.keyed = False
                left = until - asyncio.get_running_loop().time()
                within = None if within is None else max(left, 0.001)
                return await self.call(method, listed, rid=rid, within=within)
            raise DrcError.from_dbus(response.error, response.message)
        assert response.ok is not None
        return response.ok

    def send(self, method: str, args: list[Any], answered: Answered, *, until: float) -> bool:
        """:meth:`call`'s fast lane, for a plain request (no ``rid``, no shared or continued
        answer) on a connection already open: sealed and written now, and answered by
        ``answered(ok, None)`` or ``answered(None, error)`` in the loop turn that reads its
        answer (or loses the connection). No task, no future, no loop turn of its own: a
        cache miss is one of these. False when it cannot go so (not connected, not keyed,
        the peer not reading, MUNGE failing here): then nothing was sent, and :meth:`call`
        says why.

        ``until`` is the caller's deadline (loop time): past the link's own timeout the
        connection fails, as :meth:`call`'s would; before it, ``answered(None,
        TimeoutError())`` and the connection stays, as :meth:`call` raises TimeoutError."""
        conn = self._conn
        if conn is None or not conn.alive or not conn.keyed or conn.writable is not None:
            return False
        if self.workers is not None or method in SHAREABLE or method in CONTINUED:
            return False
        key = os.urandom(KEY_BYTES)
        request = Request(next(self._ids), method, args, None, key)
        try:
            frame = pack_frame(self._seal(request), self.max_frame)
        except (DrcError, FrameError):
            return False  # call() meets it again, and says it
        loop = asyncio.get_running_loop()
        own = loop.time() + self.timeout
        waiter = _Waiter(conn, request.id, answered)
        waiter.timer = loop.call_at(min(own, until), waiter.expired, until < own)
        conn.pending[request.id] = waiter  # type: ignore[assignment]  # as a future is used
        conn.keys[request.id] = key
        conn.transport.write(frame)
        return True

    def _silent(self) -> LinkDown:
        """How a request fails when DRCS said nothing within this link's timeout."""
        return LinkDown(self.target, f"no answer within {self.timeout:g} s")

    @property
    def connected(self) -> bool:
        """Whether a connection is open (a call now would not connect first)."""
        return self._conn is not None and self._conn.alive

    async def until_closed(self) -> None:
        """Return when the connection open now closes (at once when none is open)."""
        conn = self._conn
        if conn is not None and conn.alive:
            await asyncio.shield(conn.closed)

    def keepalive(self, idle: int, interval: int = 10, count: int = 3) -> None:
        """Have the kernel probe the open connection after ``idle`` s of silence: a link that
        carries no frame for long (a fail-over's standby) learns that its peer's host went,
        at no CPU cost to DRCS (its kernel answers the probes)."""
        if not self.connected:
            return
        assert self._conn is not None
        sock = self._conn.transport.get_extra_info("socket")
        if sock is None:
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        options = (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", count))
        for option, value in options:
            if hasattr(socket, option):  # Linux; elsewhere the system's defaults
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)

    async def close(self, reason: str = "connection closed by this node") -> None:
        """Drop the connection; calls still waiting on it fail with ``reason``."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(LinkDown(self.target, reason))
            await conn.closed

    async def __aenter__(self) -> LinkClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _connected(self) -> _Connection:
        conn = self._conn
        if conn is not None and conn.alive:  # the common case: no lock to take
            return conn
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._conn is not None and self._conn.alive:
                return self._conn
            loop = asyncio.get_running_loop()
            sock = await self._numeric_connect(loop)
            if sock is not None:
                transport, conn = await loop.create_connection(lambda: _Connection(self), sock=sock)
            else:
                local = (self.source, 0) if self.source else None
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port, local_addr=local
                )
                sock = transport.get_extra_info("socket")
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conn = conn
            return conn

    async def _numeric_connect(self, loop: asyncio.AbstractEventLoop) -> socket.socket | None:
        """A socket connected to a numeric ``host`` (from a numeric ``source``), made here
        rather than by ``create_connection``'s general path: no address resolution, and a
        connect the kernel finished at once (loopback, the cluster simulator's thousands of
        nodes) costs no wait for writability. None when an address is a name: that path."""
        family = _numeric_family(self.host)
        if family is None or (self.source and _numeric_family(self.source) != family):
            return None
        address = (self.host, self.port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.source:
                sock.bind((self.source, 0))
            error = sock.connect_ex(address)
            if error in _IN_PROGRESS:
                error = sock.connect_ex(address)  # 0 when the handshake is already done
            if error in _IN_PROGRESS:
                error = await _connect_ended(loop, sock)
            if error and error != errno.EISCONN:
                raise OSError(error, os.strerror(error))
        except BaseException:
            sock.close()
            raise
        return sock

    def _seal(self, request: Request) -> bytes:
        payload = request.to_payload()
        try:
            return self.munge.encode(payload, uid_restriction=self.server_uid)
        except MungeError as err:
            raise self._seal_error(err) from None

    async def _seal_on_worker(self, request: Request) -> bytes:
        assert self.workers is not None
        job = _Seal(self.munge, request.to_payload(), self.server_uid)
        if self.workers.submit(job):
            job.done()
        try:
            return await job.future
        except MungeError as err:
            raise self._seal_error(err) from None

    def _seal_error(self, err: MungeError) -> DrcError:
        if err.code in UNREACHABLE:
            reason = f"{LOCAL_MUNGE}: {err.message}"
            return LinkDown(self.target, reason, LOCAL_MUNGE_HINT)
        return DrcError(Code.CRED_EXTERNAL_FAILURE, f"{self.target}: local munged: {err.message}")

    def _open_shared(self, request: Request | None, job: _Open) -> Response | None:
        """The response a shared answer makes for ``request``; None (dropped) when it is no
        fresh answer to it: an old batch replayed, another generation's, another question's."""
        assert job.shared is not None
        if request is None:
            log.debug("%s: shared answer for unknown id %d dropped", self.target, job.shared[0])
            return None
        decoded = self._checked(job.decoded, job.error)
        shared = SharedAnswer.from_payload(decoded.payload)
        answer = shared.answer_for(request)
        if answer is None:
            log.warning(
                "%s: dropped a shared answer that is no fresh answer to %s%s (asked %s)%s",
                self.target,
                request.method,
                request.args[: len(shared.asked)],
                shared.asked,
                ", a credential seen before" if decoded.replayed else "",
            )
            return None
        return Response(job.shared[0], ok=answer)

    def _checked(self, decoded: Decoded | None, error: MungeError | None) -> Decoded:
        """The credential decoded, if it truly comes from ``server_uid``."""
        if decoded is None:
            assert error is not None
            if error.code in UNREACHABLE:
                reason = f"{LOCAL_MUNGE} could not check the response: {error.message}"
                raise LinkDown(self.target, reason, LOCAL_MUNGE_HINT)
            raise DrcError(Code.EPERM, f"{self.target}: response refused: {error.message}")
        if decoded.uid != self.server_uid:
            raise DrcError(
                Code.EPERM,
                f"DRC link: response from uid {decoded.uid}, expected DRCS uid {self.server_uid}",
            )
        return decoded


class SyncLinkClient:
    """A blocking :class:`LinkClient` with its own private event loop (for CLIs and threads)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._client = LinkClient(*args, **kwargs)
        self._lock = threading.Lock()

    def call(
        self, method: str, args: list[Any] | tuple[Any, ...] = (), *, rid: str | None = None
    ) -> list[Any]:
        with self._lock:
            return self._loop.run_until_complete(self._client.call(method, args, rid=rid))

    def close(self) -> None:
        with self._lock:
            if not self._loop.is_closed():
                self._loop.run_until_complete(self._client.close())
                self._loop.close()

    def __enter__(self) -> SyncLinkClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
