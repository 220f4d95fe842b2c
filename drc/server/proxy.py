"""A typed, blocking client of ``org.drc.Server`` for drccli, drc-jedi and tests.

Member names and signatures come from the exported table (:class:`drc.export.Stub` of
:class:`ServerExports`): a renamed or re-typed verb changes the client with it.
"""

from __future__ import annotations

from typing import Any

from drc.bus import SyncBusClient
from drc.export import ExportedMethod, Stub
from drc.server.exports import BUS_NAME, INTERFACE, OBJECT_PATH, ServerExports
from drc.wire import access_from_tuple


class ServerProxy:
    def __init__(self, address: str | None = None, timeout: float = 10.0) -> None:
        self.address = address
        self.bus = SyncBusClient(address, timeout=timeout)
        self.remote: Any = Stub(ServerExports, self._send)

    def _send(self, m: ExportedMethod, args: list[Any]) -> list[Any]:
        return self.bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, m.name, m.in_signature, args)

    def call(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        """Any member with any signature, as given: for tests of what DRCS refuses."""
        return self.bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, member, signature, list(args))

    def acquire(self, flags: int = 0) -> int:
        return self.remote.acquire(flags)

    def grant(self, credential: int, target: int, flags: int) -> None:
        self.remote.grant(credential, target, flags)

    def revoke(self, credential: int, target: int, flags: int) -> None:
        self.remote.revoke(credential, target, flags)

    def access(self, credential: int) -> tuple[int, int, int, int]:
        info = access_from_tuple(self.remote.access(credential, 0))
        return info.credential, info.cookie1, info.cookie2, info.ptag

    def release(self, credential: int) -> bool:
        return self.remote.release(credential, 0)

    def list(self) -> list[dict[str, Any]]:
        return self.remote.list()

    def show(self, credential: int) -> dict[str, Any]:
        return self.remote.show(credential)

    def limits(self) -> list[tuple[str, int, int]]:
        return [tuple(x) for x in self.remote.limits()]

    def set_limit(self, scope: str, id: int, value: int) -> None:
        self.remote.set_limit(scope, id, value)

    def clear_limit(self, scope: str, id: int) -> None:
        self.remote.clear_limit(scope, id)

    def expire_jobs(self, jobs: list[int]) -> list[int]:
        return self.remote.expire_jobs(jobs)

    def pins(self) -> list[tuple[int, int, int, str]]:
        """(pinning uid, credential, owner uid, state) of every pin (admins)."""
        return [tuple(x) for x in self.remote.pins()]

    def expire_pins(self, uid: int) -> list[int]:
        return self.remote.expire_pins(uid)

    def outstanding_jobs(self) -> list[int]:
        return self.remote.outstanding_jobs()

    def node_rebooted(self, node: str) -> list[int]:
        return self.remote.node_rebooted(node)

    def status(self) -> dict[str, Any]:
        return self.remote.status()

    def close(self) -> None:
        self.bus.close()
