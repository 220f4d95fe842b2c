"""The one table of DRC error codes.

Python exceptions, D-Bus error names, C return codes (``lib/rdmacred.h`` returns them negated)
and CLI messages are all derived from :class:`Code`; a test checks the C header against it.
"""

from __future__ import annotations

from enum import IntEnum


class Code(IntEnum):
    SUCCESS = 0
    EINVAL = 1
    EPERM = 2
    ENOSPC = 3
    ECONNREFUSED = 4
    ALREADY_GRANTED = 5
    CRED_NOT_FOUND = 6
    CRED_CREATE_FAILURE = 7
    CRED_EXTERNAL_FAILURE = 8
    BAD_TOKEN = 9
    # drc's own codes, beyond Cray's: each names a mistake that retrying cannot fix, where
    # Cray's DRC said EINVAL and its clients retry EINVAL without bound.
    EFLAGS = 10
    EBADTARGET = 11
    EFAULT = 12
    EPROTO = 13

    @property
    def drc_name(self) -> str:
        """The C macro name, e.g. ``DRC_EPERM``."""
        return f"DRC_{self.name}"

    @property
    def dbus_name(self) -> str:
        """The D-Bus error name, e.g. ``org.drc.Error.EPERM``."""
        return f"{DBUS_ERROR_PREFIX}{self.name}"


DBUS_ERROR_PREFIX = "org.drc.Error."

#: One-line meaning of each code, as ``drc_error_message()`` and ``drccli`` print it.
MESSAGES: dict[Code, str] = {
    Code.SUCCESS: "success",
    Code.EINVAL: "invalid parameter",
    Code.EPERM: "invalid permissions",
    Code.ENOSPC: "no space left (a credential limit or the resource pool is exhausted)",
    Code.ECONNREFUSED: "connection refused (no DRC daemon answered: is drcc.service running "
    "here, drcs.service on the server?)",
    Code.ALREADY_GRANTED: "access already granted to this target",
    Code.CRED_NOT_FOUND: "credential not found",
    Code.CRED_CREATE_FAILURE: "credential could not be created",
    Code.CRED_EXTERNAL_FAILURE: "external application failure",
    Code.BAD_TOKEN: "bad, expired or revoked token",
    Code.EFLAGS: "flags not valid for this call",
    Code.EBADTARGET: "no such grant target (job 0, id -1, or a revoke of what was never granted)",
    Code.EFAULT: "a required pointer argument is NULL",
    Code.EPROTO: "the daemon's answer was not understood (mismatched drc versions?)",
}

#: Does a client's retry loop ever see the call succeed? (rdmacred(3) prints this table.)
RETRY_HELPS: dict[Code, str] = {
    Code.SUCCESS: "-",
    Code.EINVAL: "no, but harmless",
    Code.EPERM: "only after a grant",
    Code.ENOSPC: "yes, after a release",
    Code.ECONNREFUSED: "yes, once drcc runs",
    Code.ALREADY_GRANTED: "no (already done)",
    Code.CRED_NOT_FOUND: "no",
    Code.CRED_CREATE_FAILURE: "maybe",
    Code.CRED_EXTERNAL_FAILURE: "maybe",
    Code.BAD_TOKEN: "no",
    Code.EFLAGS: "no",
    Code.EBADTARGET: "no",
    Code.EFAULT: "no",
    Code.EPROTO: "no",
}


class DrcError(Exception):
    """A refusal with a DRC code and a message written for the person who reads it."""

    #: For an ENOSPC from a limit: the scope of the limit that refused (``user-default`` …).
    limit_scope: str | None = None

    def __init__(self, code: Code | int, message: str | None = None) -> None:
        self.code = Code(code)
        self.message = message or MESSAGES[self.code]
        super().__init__(self.message)

    @property
    def name(self) -> str:
        return self.code.drc_name

    def __str__(self) -> str:
        return f"{self.name}: {self.message}"

    @classmethod
    def from_dbus(cls, error_name: str, text: str) -> DrcError:
        """Rebuild the error a daemon sent; an unknown name becomes EPROTO."""
        if error_name.startswith(DBUS_ERROR_PREFIX):
            try:
                return cls(Code[error_name.removeprefix(DBUS_ERROR_PREFIX)], text)
            except KeyError:
                pass
        return cls(Code.EPROTO, f"{error_name}: {text}")


def einval(message: str) -> DrcError:
    return DrcError(Code.EINVAL, message)


def eflags(message: str) -> DrcError:
    return DrcError(Code.EFLAGS, message)


def ebadtarget(message: str) -> DrcError:
    return DrcError(Code.EBADTARGET, message)


def eperm(message: str) -> DrcError:
    return DrcError(Code.EPERM, message)


def not_found(credential: int) -> DrcError:
    return DrcError(Code.CRED_NOT_FOUND, f"credential {credential} not found")
