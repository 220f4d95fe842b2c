"""libdrc for Python: acquire, grant and access credentials through this node's DRCC.

    from drc import client
    cred = client.acquire(flags=client.FLEX)
    client.grant(cred, wlm=other_job)
    info = client.access(cred)          # .credential .cookie1 .cookie2 .ptag
    ...
    client.release_local(info)
    client.release(cred)

Calls go to ``org.drc.Node`` on the system bus, by the names and signatures of its exported
table (:class:`drc.node.exports.NodeExports`), (``DBUS_SYSTEM_BUS_ADDRESS`` when set). DRCC
learns who you are from the kernel: nothing here can claim another identity. Failures raise
:class:`DrcError` with ``.code`` (the positive DRC code) and ``.name`` (``"DRC_EPERM"``); no
answer within ``timeout`` seconds is ``DRC_ECONNREFUSED``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from drc.bus import SyncBusClient
from drc.config import CLIENT_TIMEOUT
from drc.core.errors import Code, DrcError
from drc.core.model import AccessInfo, Flags
from drc.export import ExportedMethod, Stub
from drc.node.exports import BUS_NAME, INTERFACE, OBJECT_PATH, NodeExports
from drc.wire import access_from_tuple

__all__ = [
    "FLEX",
    "PERSISTENT",
    "AccessInfo",
    "Code",
    "DrcError",
    "SlingshotAccess",
    "Whoami",
    "access",
    "access_slingshot",
    "access_with_token",
    "accessed",
    "acquire",
    "acquired",
    "get_credential_token",
    "get_wlm_id",
    "grant",
    "release",
    "release_local",
    "revoke",
    "set_timeout",
    "whoami",
]

FLEX = int(Flags.FLEX_CREDENTIAL)
PERSISTENT = int(Flags.PERSISTENT)

#: Longer than DRCC's own budget for DRCS ([link] timeout), so a DRCS outage arrives as
#: DRCC's answer naming it, not as a timeout blaming DRCC.
DEFAULT_TIMEOUT = float(CLIENT_TIMEOUT)

_lock = threading.Lock()
_bus: SyncBusClient | None = None
_timeout = DEFAULT_TIMEOUT


def set_timeout(seconds: float) -> None:
    """Bound every later call; past it the call fails with DRC_ECONNREFUSED ("drcc did not
    answer"). Below drcc's own budget for DRCS ([link] timeout, 5 s by default) a DRCS outage
    is reported as that timeout, not as drcc's answer naming the server."""
    global _timeout, _bus
    with _lock:
        _timeout = seconds
        if _bus is not None:
            _bus.close()
            _bus = None


def _send(m: ExportedMethod, args: list[Any]) -> list[Any]:
    global _bus
    with _lock:
        if _bus is None:
            _bus = SyncBusClient(timeout=_timeout)
        bus = _bus
    return bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, m.name, m.in_signature, args)


#: DRCC's verbs, called by their Python names (``_node.access(cred, 0)`` sends ``Access``).
_node: Any = Stub(NodeExports, _send)


def acquire(flags: int = 0) -> int:
    """A new credential owned by you (and your job); returns its id."""
    return _node.acquire(flags)


def access(credential: int) -> AccessInfo:
    """Take your job's (or process's) reference and get the credential's resources."""
    return access_from_tuple(_node.access(credential, 0))


@dataclass(frozen=True)
class SlingshotAccess:
    """An access on HPE Slingshot: the credential's VNI and your CXI service on each device."""

    credential: int
    vni: int
    svc_ids: tuple[int, ...]  # by device, in the order of ``devices``
    devices: tuple[str, ...]  # "cxi0", "cxi1" …

    def auth_key(self, device: int = 0) -> str:
        """The Mercury/libfabric CXI auth key ``"svc_id:vni"`` for ``devices[device]``."""
        return f"{self.svc_ids[device]}:{self.vni}"

    def environment(self) -> dict[str, str]:
        """``SLINGSHOT_VNIS``, ``SLINGSHOT_SVC_IDS``, ``SLINGSHOT_DEVICES`` for libfabric's CXI
        provider (what the SPANK plugin exports with ``--drc``)."""
        return {
            "SLINGSHOT_VNIS": str(self.vni),
            "SLINGSHOT_SVC_IDS": ",".join(map(str, self.svc_ids)),
            "SLINGSHOT_DEVICES": ",".join(self.devices),
        }


def access_slingshot(credential: int) -> SlingshotAccess:
    """:func:`access` on a Slingshot system: also makes (or reuses) your CXI services."""
    cred, vni, services = _node.access_slingshot(credential, 0)
    pairs = [s.rpartition(":") for s in services.split(",") if s]
    return SlingshotAccess(cred, vni, tuple(int(p[2]) for p in pairs), tuple(p[0] for p in pairs))


def access_with_token(token: str) -> AccessInfo:
    """Access with a token from :func:`get_credential_token`, checked by this node alone."""
    return access_from_tuple(_node.access_with_token(token, 0))


def get_credential_token(credential: int) -> str:
    """A signed, printable token another process can access the credential with."""
    return _node.get_credential_token(credential)


def _target(uid: int | None, gid: int | None, wlm: int | None) -> tuple[int, int]:
    given = [
        (v, f)
        for v, f in ((uid, Flags.TARGET_UID), (gid, Flags.TARGET_GID), (wlm, Flags.TARGET_WLM))
        if v is not None
    ]
    if len(given) != 1:
        raise DrcError(Code.EFLAGS, "give exactly one of uid=, gid= or wlm=")
    value, flag = given[0]
    return value, int(flag)


def grant(
    credential: int, *, uid: int | None = None, gid: int | None = None, wlm: int | None = None
) -> None:
    """Let a uid, a gid or a job (WLM id) access the credential (owner or root only)."""
    _node.grant(credential, *_target(uid, gid, wlm))


def revoke(
    credential: int, *, uid: int | None = None, gid: int | None = None, wlm: int | None = None
) -> None:
    """Stop new access by a uid, gid or job; references already taken stay."""
    _node.revoke(credential, *_target(uid, gid, wlm))


def release(credential: int) -> bool:
    """Drop your reference (the owner's release ends the credential); True when freed."""
    return _node.release(credential, 0)


def release_local(info: AccessInfo) -> None:
    """Free node-local resources of an access; the reference stays until :func:`release`."""
    _node.release_local(info.credential)


def get_wlm_id() -> int:
    """Your job's id as DRCC sees it (0 outside a job)."""
    return _node.get_wlm_id()


@dataclass(frozen=True)
class Whoami:
    """What this node's DRCC sees of the calling process (from the kernel, never from you)."""

    node: str
    uid: int
    gid: int
    job: int  # 0 outside a job: then references belong to the process, and die with it
    pid: int
    fabric: str  # "slingshot" (use access_slingshot) or "cookie"


def whoami() -> Whoami:
    """Your node, uid, gid, job and pid as DRCC sees them, and the node's fabric."""
    return Whoami(*_node.who_am_i())


@contextmanager
def acquired(flags: int = 0) -> Iterator[int]:
    """``with client.acquired(FLEX) as cred:`` — released on exit.

    A reference is an association: an ``accessed`` block inside, by the same holder, already
    released it, so "already gone" is success here.
    """
    cred = acquire(flags)
    try:
        yield cred
    finally:
        try:
            release(cred)
        except DrcError as e:
            if e.code is not Code.CRED_NOT_FOUND:
                raise


@contextmanager
def accessed(credential: int) -> Iterator[AccessInfo]:
    """``with client.accessed(cred) as info:`` — release_local and release on exit."""
    info = access(credential)
    try:
        yield info
    finally:
        try:
            release_local(info)
        finally:
            release(credential)
