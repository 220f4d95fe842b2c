"""A small ctypes binding to libmunge (``libmunge.so.2``).

Why our own: the only Python binding (pymunge) is unmaintained, the ``munge``/``unmunge``
commands cost a process per frame (~1 ms), and the DRC link needs three calls. libmunge is
loaded lazily, so importing this module works without it.

``munge_decode`` overwrites the context it is given, and contexts are not thread-safe, so each
:class:`Munge` keeps one encode and one decode context, each behind its own lock.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

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
_OPT_TTL = 4
_OPT_SOCKET = 8
_OPT_UID_RESTRICTION = 9
_UID_ANY = 0xFFFFFFFF  # MUNGE_UID_ANY == (uid_t) -1


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
    """

    payload: bytes
    uid: int
    gid: int
    replayed: bool = False


_lib: ctypes.CDLL | None = None
_free = ctypes.CDLL(None).free
_free.argtypes = [ctypes.c_void_p]
_free.restype = None


def _libmunge() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libmunge.so.2")
        except OSError as err:
            raise MungeError(EMUNGE_SNAFU, f"libmunge.so.2 not loadable: {err}") from None
        lib.munge_ctx_create.restype = ctypes.c_void_p
        lib.munge_ctx_create.argtypes = []
        lib.munge_ctx_destroy.restype = None
        lib.munge_ctx_destroy.argtypes = [ctypes.c_void_p]
        lib.munge_ctx_set.restype = ctypes.c_int  # variadic: arguments passed as ctypes objects
        lib.munge_ctx_strerror.restype = ctypes.c_char_p
        lib.munge_ctx_strerror.argtypes = [ctypes.c_void_p]
        lib.munge_strerror.restype = ctypes.c_char_p
        lib.munge_strerror.argtypes = [ctypes.c_int]
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
    """Encode and decode MUNGE credentials through one munged (``socket``; None = default)."""

    def __init__(self, socket: str | None = None, *, ttl: int | None = None) -> None:
        self._lib = _libmunge()
        self.socket = socket
        self._enc_lock = threading.Lock()
        self._dec_lock = threading.Lock()
        self._enc = self._new_ctx(socket, ttl)
        self._dec = self._new_ctx(socket, None)

    def _new_ctx(self, socket: str | None, ttl: int | None) -> int:
        ctx = self._lib.munge_ctx_create()
        if not ctx:
            raise MungeError(EMUNGE_NO_MEMORY, "munge_ctx_create failed")
        if socket is not None:
            self._set(ctx, _OPT_SOCKET, ctypes.c_char_p(socket.encode()))
        if ttl is not None:
            self._set(ctx, _OPT_TTL, ctypes.c_int(ttl))
        return ctx

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
        with self._enc_lock:
            if self._enc is None:
                raise MungeError(EMUNGE_BAD_ARG, "MUNGE context closed")
            restrict = _UID_ANY if uid_restriction is None else uid_restriction
            self._set(self._enc, _OPT_UID_RESTRICTION, ctypes.c_uint(restrict))
            rc = self._lib.munge_encode(ctypes.byref(cred), self._enc, payload, len(payload))
            try:
                if rc != EMUNGE_SUCCESS:
                    raise self._error(rc, self._enc)
                return ctypes.string_at(cred.value)
            finally:
                if cred.value:
                    _free(cred.value)

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
        with self._dec_lock:
            if self._dec is None:
                raise MungeError(EMUNGE_BAD_ARG, "MUNGE context closed")
            rc = self._lib.munge_decode(
                cred,
                self._dec,
                ctypes.byref(buf),
                ctypes.byref(length),
                ctypes.byref(uid),
                ctypes.byref(gid),
            )
            try:  # libmunge hands out the payload even for some errors (expired, replayed)
                replayed = rc == EMUNGE_CRED_REPLAYED and allow_replayed
                if rc != EMUNGE_SUCCESS and not replayed:
                    raise self._error(rc, self._dec)
                payload = ctypes.string_at(buf.value, length.value) if buf.value else b""
                return Decoded(payload, uid.value, gid.value, replayed)
            finally:
                if buf.value:
                    _free(buf.value)

    def close(self) -> None:
        """Free both contexts; later calls raise :class:`MungeError`."""
        for lock, attr in ((self._enc_lock, "_enc"), (self._dec_lock, "_dec")):
            with lock:
                ctx = getattr(self, attr)
                if ctx is not None:
                    self._lib.munge_ctx_destroy(ctx)
                    setattr(self, attr, None)

    def __enter__(self) -> Munge:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_enc_lock", None) is not None:
            self.close()
