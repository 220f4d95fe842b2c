"""The verbs of users and admins on ``org.drc.Server`` (DRCS's bus), declared once.

DRCS implements them (:class:`drc.server.exports.ServerExports`); ``drccli``, ``drc-jedi`` and
the tests call them through a :class:`drc.export.Stub` of this class
(:class:`drc.serverclient.ServerProxy`). A client reads names and signatures from here, so it
loads neither DRCS nor the core service, and a renamed verb breaks the client's fast tests
instead of an admin's script. The node verbs DRCS serves beside these are
:mod:`drc.nodeverbs`'.
"""

from __future__ import annotations

from typing import Any

from drc.export import PeerCredentials, method

BUS_NAME = "org.drc.Server"
OBJECT_PATH = "/org/drc/Server"
INTERFACE = "org.drc.Server"


class ServerVerbs:
    """Declarations only: each body says so, an implementation overrides it."""

    def _declared(self) -> Any:
        raise NotImplementedError(f"{type(self).__qualname__} does not implement this verb")

    # -- user verbs ----------------------------------------------------------------------

    @method("u", "u", mutating=True, grouped=True)
    def acquire(self, peer: PeerCredentials, flags: int) -> Any:
        """A new credential, pinned by the caller's uid: its id."""
        return self._declared()

    @method("uuu", "", mutating=True, grouped=True)
    def grant(self, peer: PeerCredentials, credential: int, target: int, flags: int) -> Any:
        return self._declared()

    @method("uuu", "", mutating=True, grouped=True)
    def revoke(self, peer: PeerCredentials, credential: int, target: int, flags: int) -> Any:
        return self._declared()

    @method("uu", "uuuu", mutating=True, grouped=True)
    def access(self, peer: PeerCredentials, credential: int, flags: int) -> Any:
        """(credential, cookie1, cookie2, ptag); the caller's uid pins the credential."""
        return self._declared()

    @method("uu", "b", mutating=True, frees=True)
    def release(self, peer: PeerCredentials, credential: int, flags: int) -> Any:
        """Drop the caller's pin: True when the credential was freed by it."""
        return self._declared()

    @method("", "aa{sv}")
    def list(self, peer: PeerCredentials) -> Any:
        return self._declared()

    @method("u", "a{sv}")
    def show(self, peer: PeerCredentials, credential: int) -> Any:
        return self._declared()

    @method("", "a(sut)")
    def limits(self, peer: PeerCredentials) -> Any:
        """(scope, id, value) of every limit in the store."""
        return self._declared()

    # -- admin verbs ---------------------------------------------------------------------

    @method("sut", "", mutating=True)
    def set_limit(self, peer: PeerCredentials, scope: str, id: int, value: int) -> Any:
        return self._declared()

    @method("su", "", mutating=True)
    def clear_limit(self, peer: PeerCredentials, scope: str, id: int) -> Any:
        return self._declared()

    @method("au", "au", mutating=True, frees=True)
    def expire_jobs(self, peer: PeerCredentials, jobs: list[int]) -> Any:
        """The jobs ended: drop their references everywhere; the credentials freed."""
        return self._declared()

    @method("", "a(uuus)")
    def pins(self, peer: PeerCredentials) -> Any:
        """(pinning uid, credential, owner uid, state) of every pin."""
        return self._declared()

    @method("u", "au", mutating=True, frees=True)
    def expire_pins(self, peer: PeerCredentials, uid: int) -> Any:
        """Drop every pin of ``uid``: the credentials freed."""
        return self._declared()

    @method("", "au")
    def outstanding_jobs(self, peer: PeerCredentials) -> Any:
        return self._declared()

    @method("s", "au", mutating=True, frees=True)
    def node_rebooted(self, peer: PeerCredentials, node: str) -> Any:
        """Drop every reference held on ``node``: the credentials freed."""
        return self._declared()

    @method("", "aa{sv}", on_loop=True)
    def servers(self, peer: PeerCredentials) -> Any:
        """Every DRCS of ``[link] servers``: reachable or not, who answered, its followers."""
        return self._declared()

    @method("", "a{sv}", on_loop=True)
    def status(self, peer: PeerCredentials) -> Any:
        return self._declared()
