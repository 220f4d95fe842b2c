"""A typed, blocking client of ``org.drc.Server`` for drccli, drc-jedi and tests.

:class:`ServerProxy` is a :class:`drc.export.Stub` of :class:`drc.serververbs.ServerVerbs`:
every verb DRCS declares there (``servers`` and ``status`` included) is a method here, by the
same name and signature, so a renamed or re-typed verb changes the client with it. Loading it
loads neither DRCS nor the core service: an admin's ``drccli`` runs on a login node too.
"""

from __future__ import annotations

from typing import Any

from drc.bus import SyncBusClient
from drc.export import ExportedMethod, Stub
from drc.serververbs import BUS_NAME, INTERFACE, OBJECT_PATH, ServerVerbs


class ServerProxy(Stub):
    """The verbs of :class:`ServerVerbs` on DRCS's bus; a few take defaults callers expect."""

    def __init__(self, address: str | None = None, timeout: float = 10.0) -> None:
        self.address = address
        self.bus = SyncBusClient(address, timeout=timeout)
        super().__init__(ServerVerbs, self._send)

    def _send(self, m: ExportedMethod, args: list[Any]) -> list[Any]:
        return self.bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, m.name, m.in_signature, args)

    def _verb(self, attr: str) -> Any:
        return super().__getattr__(attr)

    def call(self, member: str, signature: str = "", *args: Any) -> list[Any]:
        """Any member with any signature, as given: for tests of what DRCS refuses."""
        return self.bus.call(BUS_NAME, OBJECT_PATH, INTERFACE, member, signature, list(args))

    def acquire(self, flags: int = 0) -> int:
        return self._verb("acquire")(flags)

    def access(self, credential: int, flags: int = 0) -> tuple[int, int, int, int]:
        """(credential, cookie1, cookie2, ptag)."""
        return self._verb("access")(credential, flags)

    def release(self, credential: int, flags: int = 0) -> bool:
        return self._verb("release")(credential, flags)

    def limits(self) -> list[tuple[str, int, int]]:
        return [tuple(x) for x in self._verb("limits")()]

    def pins(self) -> list[tuple[int, int, int, str]]:
        """(pinning uid, credential, owner uid, state) of every pin (admins)."""
        return [tuple(x) for x in self._verb("pins")()]

    def close(self) -> None:
        self.bus.close()
