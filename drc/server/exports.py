"""``org.drc.Server``: the DRCS service object every exporter publishes.

Each method turns the transport's kernel-verified peer into a :class:`Caller`, validates its
arguments and calls the core. Direct callers (drccli, scripts on the service node) act outside
any job: their references are *pins* of their uid that last until they release them — the
paper's "acquire, then grant, list, release in separate commands".
"""

from __future__ import annotations

from typing import Any

from drc.bus import PeerCredentials, method
from drc.core.errors import einval, eperm
from drc.core.model import Caller, Credential, Holder, LimitScope, Target, check_uint32
from drc.core.service import CredentialService
from drc.identity import process_gid

BUS_NAME = "org.drc.Server"
OBJECT_PATH = "/org/drc/Server"
INTERFACE = "org.drc.Server"
MAX_JOBS_PER_CALL = 100_000


def direct_caller(peer: PeerCredentials) -> Caller:
    return Caller(
        uid=peer.uid,
        gid=process_gid(peer.pid, peer.uid),
        gids=peer.gids,
        pid=peer.pid,
        holder=Holder.pin(peer.uid),
    )


def credential_dict(c: Credential) -> dict[str, Any]:
    """A credential as ``a{sv}``: the fields of ``drccli list`` and more."""
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
    }


class ServerExports:
    def __init__(self, service: CredentialService) -> None:
        self.service = service

    def _admin(self, peer: PeerCredentials, what: str) -> Caller:
        caller = direct_caller(peer)
        if not self.service.policy.is_admin(caller):
            raise eperm(f"uid {peer.uid} is not a DRC admin: {what} needs root or an admin group")
        return caller

    # -- user verbs ----------------------------------------------------------------------

    @method("u", "u")
    def acquire(self, peer: PeerCredentials, flags: int) -> int:
        return self.service.acquire(direct_caller(peer), flags).id

    @method("uuu", "")
    def grant(self, peer: PeerCredentials, credential: int, target: int, flags: int) -> None:
        self.service.grant(direct_caller(peer), credential, Target.from_flags(target, flags))

    @method("uuu", "")
    def revoke(self, peer: PeerCredentials, credential: int, target: int, flags: int) -> None:
        self.service.revoke(direct_caller(peer), credential, Target.from_flags(target, flags))

    @method("uu", "uuuu")
    def access(self, peer: PeerCredentials, credential: int, flags: int) -> tuple[int, ...]:
        if flags:
            raise einval(f"access takes no flags (got 0x{flags:x})")
        info = self.service.access(direct_caller(peer), credential)
        return (info.credential, info.cookie1, info.cookie2, info.ptag)

    @method("uu", "b")
    def release(self, peer: PeerCredentials, credential: int, flags: int) -> bool:
        if flags:
            raise einval(f"release takes no flags (got 0x{flags:x})")
        return self.service.release(direct_caller(peer), credential)

    @method("", "aa{sv}")
    def list(self, peer: PeerCredentials) -> list[dict[str, Any]]:
        return [credential_dict(c) for c in self.service.list(direct_caller(peer))]

    @method("u", "a{sv}")
    def show(self, peer: PeerCredentials, credential: int) -> dict[str, Any]:
        return credential_dict(self.service.get(direct_caller(peer), credential))

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

    @method("", "a{sv}")
    def status(self, peer: PeerCredentials) -> dict[str, Any]:
        self._admin(peer, "status")
        return self.service.describe()


def _scope(name: str) -> LimitScope:
    try:
        return LimitScope(name)
    except ValueError:
        known = ", ".join(s.value for s in LimitScope)
        raise einval(f"unknown limit scope {name[:40]!r} (known: {known})") from None
