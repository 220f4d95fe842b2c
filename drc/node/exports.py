"""``org.drc.Node``: what applications (libdrc, drc.client) and root hooks call on DRCC.

Transport-free: the table here is what the bus exporter serves and what :mod:`drc.client`
calls. The daemon's parts are imported for type checking only, so a client importing this
table does not load the node daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from drc.core.errors import Code, DrcError, eflags, einval, eperm
from drc.core.model import AccessInfo, Caller, check_uint32
from drc.core.tokens import MAX_TOKEN_LEN
from drc.export import ExportedMethod, PeerCredentials, method
from drc.refusals import RefusalAudit, credential_of
from drc.wire import access_to_tuple

if TYPE_CHECKING:
    from drc.node.caller import Identifier
    from drc.node.service import NodeService

BUS_NAME = "org.drc.Node"
OBJECT_PATH = "/org/drc/Node"
INTERFACE = "org.drc.Node"


def _info(info: AccessInfo) -> tuple[int, int, int, int]:
    return access_to_tuple(info)


def _no_flags(verb: str, flags: int) -> None:
    if flags:
        raise eflags(f"{verb} takes no flags (got 0x{flags:x})")


class NodeExports:
    def __init__(self, service: NodeService, identifier: Identifier) -> None:
        self.service = service
        self.identify = identifier.caller
        self.identifier = identifier
        self.refusals = RefusalAudit()

    def refused(
        self, peer: PeerCredentials, verb: ExportedMethod, args: list, error: DrcError
    ) -> None:
        """The dispatcher's hook: audit and count a refused call, with the caller's job."""
        try:
            job = self.identify(peer).job
        except DrcError:
            job = 0  # the caller is gone
        node = self.identifier.node
        self.refusals.record(verb.name, peer.uid, job, node, credential_of(verb, args), error)

    @staticmethod
    def _root(peer: PeerCredentials, what: str) -> None:
        if peer.uid != 0:
            raise eperm(f"uid {peer.uid} may not {what}: only root hooks (SPANK, ALPS epilog) may")

    @method("u", "u")
    async def acquire(self, peer: PeerCredentials, flags: int) -> int:
        return await self.service.acquire(self.identify(peer), flags)

    @method("uu", "uuuu")
    def access(self, peer: PeerCredentials, credential: int, flags: int):
        """Answered at once from the node cache; a miss returns a future (DRCS's answer)."""
        _no_flags("access", flags)
        caller = self.identify(peer)
        hit = self.service.cached(caller, credential)
        if hit is not None:
            return _info(hit)
        soon = self.service.access_soon(caller, credential, _info)
        return self._access_miss(caller, credential) if soon is None else soon

    async def _access_miss(self, caller: Caller, credential: int) -> tuple[int, int, int, int]:
        return _info(await self.service.access(caller, credential))

    @method("su", "uuuu")
    async def access_with_token(self, peer: PeerCredentials, token: str, flags: int):
        _no_flags("access_with_token", flags)
        if len(token) > MAX_TOKEN_LEN:
            raise DrcError(Code.BAD_TOKEN, f"token refused: longer than {MAX_TOKEN_LEN} bytes")
        return _info(await self.service.access_with_token(self.identify(peer), token))

    @method("u", "s")
    async def get_credential_token(self, peer: PeerCredentials, credential: int) -> str:
        return await self.service.token(self.identify(peer), credential)

    @method("uuu", "")
    async def grant(self, peer: PeerCredentials, credential: int, target: int, flags: int):
        await self.service.grant(self.identify(peer), credential, target, flags)

    @method("uuu", "")
    async def revoke(self, peer: PeerCredentials, credential: int, target: int, flags: int):
        await self.service.revoke(self.identify(peer), credential, target, flags)

    @method("uu", "b")
    async def release(self, peer: PeerCredentials, credential: int, flags: int) -> bool:
        _no_flags("release", flags)
        return await self.service.release(self.identify(peer), credential)

    @method("uu", "uus")
    async def access_slingshot(self, peer: PeerCredentials, credential: int, flags: int):
        """Access on Slingshot: (credential, VNI, "cxi0:SVC,cxi1:SVC") -- the caller's CXI
        service on each device, in ``[slingshot] nics`` order. Plain types, so libdrc reads
        them like Access's; the Mercury/libfabric auth key of a device is ``"SVC:VNI"``."""
        _no_flags("access_slingshot", flags)
        check_uint32("credential", credential)
        a = await self.service.access_slingshot(self.identify(peer), credential)
        services = ",".join(f"{d}:{s}" for d, s in zip(a["devices"], a["svc_ids"], strict=True))
        return (a["credential"], a["vni"], services)

    @method("u", "")
    def release_local(self, peer: PeerCredentials, credential: int) -> None:
        """Free node-local resources of an access handle (none for the pool provider).

        The reference stays: ``Release`` drops it.
        """
        check_uint32("credential", credential)

    @method("", "u")
    def get_wlm_id(self, peer: PeerCredentials) -> int:
        return self.identify(peer).job

    @method("", "suuuus")
    def who_am_i(self, peer: PeerCredentials) -> tuple[str, int, int, int, int, str]:
        """What DRCC sees of the caller: (node, uid, gid, job, pid, fabric), from the kernel
        as every verb does. ``fabric`` is how this node hands out access: "slingshot" (CXI
        services: call AccessSlingshot) or "cookie". For ``drc whoami`` and scripts."""
        caller = self.identify(peer)
        fabric = "slingshot" if self.service.slingshot is not None else "cookie"
        return (self.identifier.node, caller.uid, caller.gid, caller.job, caller.pid, fabric)

    @method("", "u")
    async def job_credential(self, peer: PeerCredentials) -> int:
        """The credential the caller's job already holds, or 0 (none, or no job).

        The SPANK plugin's ``--drc=acquire`` uses it instead of acquiring again, so the
        steps of a batch job share the batch step's credential, on every node of a
        multi-node step. Decided from references (this node's cache, else DRCS's), never
        from the job's environment (the user sets that)."""
        return await self.service.job_credential(self.identify(peer))

    # -- root hooks ----------------------------------------------------------------------

    @method("uu", "")
    def register_job_pid(self, peer: PeerCredentials, pid: int, job: int) -> None:
        """SPANK task_post_fork: vouch that ``pid`` is a task of ``job``."""
        self._root(peer, "register job tasks")
        if pid == 0 or job == 0:
            raise einval("pid and job must be non-zero")
        self.identifier.register(pid, job)

    @method("u", "au")
    async def job_ended(self, peer: PeerCredentials, job: int) -> list[int]:
        """SPANK job_epilog / ALPS epilog: the job is over on this node. Idempotent."""
        self._root(peer, "end jobs")
        if job == 0:
            raise einval("job 0 means 'no job'")
        self.identifier.forget_job(job)
        return await self.service.job_ended(job)

    @method("", "a{st}")
    def counters(self, peer: PeerCredentials) -> dict[str, int]:
        """Requests served locally and forwarded to DRCS (root only)."""
        self._root(peer, "read DRCC counters")
        return {**self.service.counters(), **self.refusals.counters()}


#: What ``org.drc.Node`` serves on the node's bus.
BUS_OBJECTS: tuple[type, ...] = (NodeExports,)
