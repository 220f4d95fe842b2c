"""A small ctypes binding to libmunge (``libmunge.so.2``).

Why our own: the only Python binding (pymunge) is unmaintained, the ``munge``/``unmunge``
commands cost a process per frame (~1 ms), and the DRC link needs three calls. libmunge is
loaded lazily, so importing this module works without it.

``munge_decode`` overwrites the context it is given, and contexts are not thread-safe, so a
call takes a context of its own from :class:`Munge`'s free list (made on first need) and gives
it back: threads calling at once each use their own and none waits for another. ctypes releases
the GIL for the call, so munged's work overlaps the caller's Python work when the calls are made
on other threads: :class:`MungeWorkers` makes them there for an event loop.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)

# munge_err_t (munge.h)
EMUNGE_SUCCESS = 0
EMUNGE_SNAFU = 1
EMUNGE_BAD_ARG = 2
EMUNGE_BAD_LENGTH = 3
EMUNGE_OVERFLOW = 4
EMUNGE_NO_MEMORY = 5
EMUNGE_SOCKET = 6
EMUNGE_TIMEOUT = 7
EMUNGE_BAD_CRED = 8
EMUNGE_BAD_VERSION = 9
EMUNGE_BAD_CIPHER = 10
EMUNGE_BAD_MAC = 11
EMUNGE_BAD_ZIP = 12
EMUNGE_BAD_REALM = 13
EMUNGE_CRED_INVALID = 14
EMUNGE_CRED_EXPIRED = 15
EMUNGE_CRED_REWOUND = 16
EMUNGE_CRED_REPLAYED = 17
EMUNGE_CRED_UNAUTHORIZED = 18

#: Errors that mean "munged could not be asked", not "this credential is bad".
UNREACHABLE = frozenset({EMUNGE_SOCKET, EMUNGE_TIMEOUT})

# munge_opt_t (munge.h)
_OPT_CIPHER_TYPE = 0
_OPT_TTL = 4
_OPT_SOCKET = 8
_OPT_UID_RESTRICTION = 9
_UID_ANY = 0xFFFFFFFF  # MUNGE_UID_ANY == (uid_t) -1
_CIPHER_NONE = 0  # munge_cipher_t


class MungeError(Exception):
    """A libmunge failure; ``code`` is the ``munge_err_t`` value (17 = replayed)."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"MUNGE error {code}: {message}")


@dataclass(frozen=True)
class Decoded:
    """A valid credential's payload and the uid/gid of the process that encoded it.

    ``replayed``: this munged had decoded the credential before (only with
    ``decode(..., allow_replayed=True)``; every other caller gets :class:`MungeError` 17).
    ``encrypted``: its payload travelled enciphered (a credential made with cipher "none"
    travelled in clear: a secret it carried is no secret).
    """

    payload: bytes
    uid: int
    gid: int
    replayed: bool = False
    encrypted: bool = True


_lib: ctypes.CDLL | None = None
# Quick calls keep the GIL (a PyDLL's): on a worker thread, each release would be one more
# wait to take it back from the event loop's thread, a context switch or two, for nothing.
_free = ctypes.PyDLL(None).free
_free.argtypes = [ctypes.c_void_p]
_free.restype = None


def _libmunge() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.PyDLL("libmunge.so.2")  # quick calls keep the GIL (see _free)
            talks = ctypes.CDLL("libmunge.so.2")  # the calls that talk to munged release it
        except OSError as err:
            raise MungeError(EMUNGE_SNAFU, f"libmunge.so.2 not loadable: {err}") from None
        lib.munge_ctx_create.restype = ctypes.c_void_p
        lib.munge_ctx_create.argtypes = []
        lib.munge_ctx_destroy.restype = None
        lib.munge_ctx_destroy.argtypes = [ctypes.c_void_p]
        lib.munge_ctx_set.restype = ctypes.c_int  # variadic: arguments passed as ctypes objects
        lib.munge_ctx_get.restype = ctypes.c_int  # variadic too: a pointer to the value
        lib.munge_ctx_strerror.restype = ctypes.c_char_p
        lib.munge_ctx_strerror.argtypes = [ctypes.c_void_p]
        lib.munge_strerror.restype = ctypes.c_char_p
        lib.munge_strerror.argtypes = [ctypes.c_int]
        lib.munge_encode = talks.munge_encode
        lib.munge_decode = talks.munge_decode
        lib.munge_encode.restype = ctypes.c_int
        lib.munge_encode.argtypes = [
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        lib.munge_decode.restype = ctypes.c_int
        lib.munge_decode.argtypes = [
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_uint),
        ]
        _lib = lib
    return _lib


class Munge:
    """Encode and decode MUNGE credentials through one munged (``socket``; None = default).

    Safe to share between threads: each call holds a libmunge context of its own."""

    def __init__(self, socket: str | None = None, *, ttl: int | None = None) -> None:
        self._lib = _libmunge()
        self.socket = socket
        self.ttl = ttl
        self._lock = threading.Lock()  # guards the free lists and ``_closed``, never a call
        self._closed = False
        #: The uid restriction each encode context was last set to: set again only when it
        #: changes (DRCS answers root node daemons: nearly always the same), one libmunge
        #: call fewer per answer. Read and written only by the call holding that context.
        self._restricted: dict[int, int] = {}
        # One of each made now, so a bad option is refused here rather than at the first call.
        self._free_enc: list[int] = [self._new_ctx(socket, ttl)]
        self._free_dec: list[int] = [self._new_ctx(socket, None)]

    def _new_ctx(self, socket: str | None, ttl: int | None) -> int:
        ctx = self._lib.munge_ctx_create()
        if not ctx:
            raise MungeError(EMUNGE_NO_MEMORY, "munge_ctx_create failed")
        try:
            if socket is not None:
                self._set(ctx, _OPT_SOCKET, ctypes.c_char_p(socket.encode()))
            if ttl is not None:
                self._set(ctx, _OPT_TTL, ctypes.c_int(ttl))
        except MungeError:
            self._lib.munge_ctx_destroy(ctx)
            raise
        return ctx

    def _take(self, free: list[int], ttl: int | None) -> int:
        """A context no other call uses until :meth:`_give` returns it."""
        with self._lock:
            if self._closed:
                raise MungeError(EMUNGE_BAD_ARG, "MUNGE context closed")
            if free:
                return free.pop()
        return self._new_ctx(self.socket, ttl)

    def _give(self, free: list[int], ctx: int) -> None:
        with self._lock:
            if not self._closed:
                free.append(ctx)
                return
        self._restricted.pop(ctx, None)  # its address may be a new context's later
        self._lib.munge_ctx_destroy(ctx)  # closed while this call ran

    def _set(self, ctx: int, opt: int, value: ctypes._SimpleCData) -> None:
        rc = self._lib.munge_ctx_set(ctypes.c_void_p(ctx), ctypes.c_int(opt), value)
        if rc != EMUNGE_SUCCESS:
            raise self._error(rc, ctx)

    def _error(self, rc: int, ctx: int) -> MungeError:
        text = self._lib.munge_ctx_strerror(ctx) or self._lib.munge_strerror(rc)
        return MungeError(rc, text.decode(errors="replace") if text else "unknown error")

    def encode(self, payload: bytes, *, uid_restriction: int | None = None) -> bytes:
        """A credential carrying ``payload``; ``uid_restriction``: the only uid that may decode."""
        cred = ctypes.c_void_p()
        ctx = self._take(self._free_enc, self.ttl)
        try:
            restrict = _UID_ANY if uid_restriction is None else uid_restriction
            if self._restricted.get(ctx) != restrict:
                self._restricted.pop(ctx, None)  # unknown until set (a failed set)
                self._set(ctx, _OPT_UID_RESTRICTION, ctypes.c_uint(restrict))
                self._restricted[ctx] = restrict
            rc = self._lib.munge_encode(ctypes.byref(cred), ctx, payload, len(payload))
            if rc != EMUNGE_SUCCESS:
                raise self._error(rc, ctx)
            return ctypes.string_at(cred.value)
        finally:
            if cred.value:
                _free(cred.value)
            self._give(self._free_enc, ctx)

    def decode(self, cred: bytes, *, allow_replayed: bool = False) -> Decoded:
        """Payload and encoder uid/gid; :class:`MungeError` if invalid, expired or replayed.

        ``allow_replayed``: a credential this munged decoded before is returned, marked
        ``replayed``, instead of refused. Only for a message whose content proves its own
        freshness (the change feed's shared answers, :mod:`drc.link.protocol`): MUNGE still
        vouches that it is authentic, unaltered and within its time to live."""
        buf = ctypes.c_void_p()
        length = ctypes.c_int()
        uid = ctypes.c_uint()
        gid = ctypes.c_uint()
        ctx = self._take(self._free_dec, None)
        try:
            rc = self._lib.munge_decode(
                cred,
                ctx,
                ctypes.byref(buf),
                ctypes.byref(length),
                ctypes.byref(uid),
                ctypes.byref(gid),
            )
            # libmunge hands out the payload even for some errors (expired, replayed)
            replayed = rc == EMUNGE_CRED_REPLAYED and allow_replayed
            if rc != EMUNGE_SUCCESS and not replayed:
                raise self._error(rc, ctx)
            payload = ctypes.string_at(buf.value, length.value) if buf.value else b""
            cipher = ctypes.c_int(_CIPHER_NONE)  # the decoded credential's (unknown: none)
            self._lib.munge_ctx_get(ctypes.c_void_p(ctx), _OPT_CIPHER_TYPE, ctypes.byref(cipher))
            return Decoded(payload, uid.value, gid.value, replayed, cipher.value != _CIPHER_NONE)
        finally:
            if buf.value:
                _free(buf.value)
            self._give(self._free_dec, ctx)

    def close(self) -> None:
        """Free the contexts; later calls raise :class:`MungeError` (one running finishes)."""
        with self._lock:
            self._closed = True
            idle = self._free_enc + self._free_dec
            self._free_enc.clear()
            self._free_dec.clear()
        for ctx in idle:
            self._restricted.pop(ctx, None)
            self._lib.munge_ctx_destroy(ctx)

    def __enter__(self) -> Munge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_lock", None) is not None:
            self.close()


#: Worker threads of a :class:`MungeWorkers`: munged answers each call in ~0.1 ms of its own
#: work, so a few calls in flight keep it (and its threads, see drc.embedded.munged) busy.
WORKERS = 2

#: Jobs a loop turn may run inline when the workers are idle (``inline_when_idle``).
INLINE_PER_TURN = 2


class MungeJob(Protocol):
    """What :class:`MungeWorkers` runs: ``run`` on a worker thread (the libmunge calls, no
    shared state of the loop's), then ``done`` on the event loop."""

    def run(self) -> None: ...

    def done(self) -> None: ...


_T = TypeVar("_T")


def attempt(call: Callable[[], _T], what: str) -> tuple[_T | None, MungeError | None]:
    """(``call()``, None), or (None, the :class:`MungeError` it raised): a job keeps the
    outcome of its call on a worker thread for its ``done`` on the loop. Any other exception
    (a bug) comes back as a MungeError too, so its frame is refused, never run nor lost."""
    try:
        return call(), None
    except MungeError as err:
        return None, err
    except Exception as err:
        return None, MungeError(EMUNGE_SNAFU, f"{what} failed: {err}")


class MungeWorkers:
    """A few threads making MUNGE calls for an event loop, so the loop works on while munged does.

    Jobs go in through one queue; finished ones come back to the loop in batches: the first job
    to finish while none waits schedules one loop callback, which runs ``done`` of every job
    finished by then. A busy loop thus pays one wake-up for many jobs, not one per job (an
    executor future per call costs a future, its callbacks and a wake-up each). Started on the
    first job, on the running loop; :meth:`close` stops the threads and drops what was queued
    or finished: no ``done`` runs after it.

    ``inline_when_idle``: when no job is at the workers, the first two jobs of a loop turn run
    at once on the loop instead: a lone request and its answer on an idle server pay no thread
    hop, while a burst still goes to the workers. ``threads=0``: every job at once.
    """

    def __init__(
        self, threads: int = WORKERS, name: str = "munge", *, inline_when_idle: bool = False
    ) -> None:
        self.threads = threads
        self.name = name
        self.inline_when_idle = inline_when_idle
        self._pending = 0  # submitted to the workers, done() not run yet (the loop's count)
        self._inline_left = INLINE_PER_TURN  # jobs that may still run inline this loop turn
        self._jobs: queue.SimpleQueue[MungeJob | None] = queue.SimpleQueue()
        self._finished: deque[MungeJob] = deque()
        self._woken = False  # a _deliver is scheduled and has not started draining
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[threading.Thread] = []
        self._closed = False

    def submit(self, job: MungeJob) -> bool:
        """Run ``job`` on a worker; its ``done`` follows on this loop, unless closed first (a
        job submitted after :meth:`close` is dropped: whoever it was for is being closed too).
        True when it ran at once, here (class doc): then ``done`` is the caller's to run."""
        if self._closed:
            return False
        if not self.threads:
            job.run()
            return True
        if self.inline_when_idle and not self._pending and self._inline_left:
            if self._inline_left == INLINE_PER_TURN:
                asyncio.get_running_loop().call_soon(self._next_turn)
            self._inline_left -= 1
            job.run()
            return True
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            for n in range(self.threads):
                worker = threading.Thread(target=self._work, name=f"{self.name}-{n}", daemon=True)
                worker.start()
                self._workers.append(worker)
        self._pending += 1
        self._jobs.put(job)
        return False

    def _next_turn(self) -> None:
        self._inline_left = INLINE_PER_TURN

    def _work(self) -> None:
        jobs, finished, loop = self._jobs, self._finished, self._loop
        assert loop is not None
        while (job := jobs.get()) is not None:
            if self._closed:
                continue
            try:
                job.run()
            except BaseException:  # a job reports its own failures; this is a bug
                log.exception("MUNGE worker: job failed")
            finished.append(job)
            if not self._woken:
                self._woken = True
                try:
                    loop.call_soon_threadsafe(self._deliver)
                except RuntimeError:  # the loop is closed: nobody is left to tell
                    return

    def _deliver(self) -> None:
        # Cleared before draining: a job finished after this line schedules the next batch,
        # one finished before it is drained here.
        self._woken = False
        finished = self._finished
        while finished and not self._closed:
            job = finished.popleft()
            self._pending -= 1
            try:
                job.done()
            except Exception:
                log.exception("MUNGE worker: completion failed")

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def alive(self) -> int:
        """Worker threads still running."""
        return sum(worker.is_alive() for worker in self._workers)

    def close(self) -> None:
        """Stop taking jobs and tell the threads to end (after the call each is in)."""
        if not self._closed:
            self._closed = True
            self._finished.clear()
            for _worker in self._workers:
                self._jobs.put(None)

    async def wait_closed(self, timeout: float = 30.0) -> None:
        """Until every thread ended (a call in progress finishes first: munged's own timeout
        bounds it); the loop runs meanwhile."""
        self.close()
        deadline = time.monotonic() + timeout
        while self.alive and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if self.alive:
            log.warning(
                "MUNGE workers: %d thread(s) still in a call after %s s", self.alive, timeout
            )
