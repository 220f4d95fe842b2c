"""A typed, blocking client of ``org.drc.Server`` for drccli, drc-jedi and tests."""

from __future__ import annotations

from typing import Any

from drc.bus import SyncBusClient
from drc.server.exports import BUS_NAME, INTERFACE, OBJECT_PATH


class ServerProxy:
    def __init__(self, address: str | None = None, timeout: float = 10.0) -> None:
        self.address = address
        self.bus = SyncBusClient(address, timeout=timeout)

    def call(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        return self.bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, member, signature, list(args))

    def acquire(self, flags: int = 0) -> int:
        return self.call("Acquire", "u", flags)[0]

    def grant(self, credential: int, target: int, flags: int) -> None:
        self.call("Grant", "uuu", credential, target, flags)

    def revoke(self, credential: int, target: int, flags: int) -> None:
        self.call("Revoke", "uuu", credential, target, flags)

    def access(self, credential: int) -> tuple[int, int, int, int]:
        cred, cookie1, cookie2, ptag = self.call("Access", "uu", credential, 0)
        return cred, cookie1, cookie2, ptag

    def release(self, credential: int) -> bool:
        return self.call("Release", "uu", credential, 0)[0]

    def list(self) -> list[dict[str, Any]]:
        return self.call("List")[0]

    def show(self, credential: int) -> dict[str, Any]:
        return self.call("Show", "u", credential)[0]

    def limits(self) -> list[tuple[str, int, int]]:
        return [tuple(x) for x in self.call("Limits")[0]]

    def set_limit(self, scope: str, id: int, value: int) -> None:
        self.call("SetLimit", "sut", scope, id, value)

    def clear_limit(self, scope: str, id: int) -> None:
        self.call("ClearLimit", "su", scope, id)

    def expire_jobs(self, jobs: list[int]) -> list[int]:
        return self.call("ExpireJobs", "au", jobs)[0]

    def outstanding_jobs(self) -> list[int]:
        return self.call("OutstandingJobs")[0]

    def node_rebooted(self, node: str) -> list[int]:
        return self.call("NodeRebooted", "s", node)[0]

    def status(self) -> dict[str, Any]:
        return self.call("Status")[0]

    def close(self) -> None:
        self.bus.close()
