"""The libmunge binding against a real private munged."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from drc.link import munge as m
from drc.link.munge import Munge, MungeError

ENCODE_AS_NOBODY = """
import sys
from drc.link.munge import Munge
sys.stdout.write(Munge(sys.argv[1]).encode(b"from nobody").decode())
"""


def flip(cred: bytes, at: int | None = None) -> bytes:
    """The credential with one base64 character of its body changed (still valid base64)."""
    i = len(cred) // 2 if at is None else at
    raw = bytearray(cred)
    raw[i] = ord("B") if raw[i] != ord("B") else ord("C")
    return bytes(raw)


def test_roundtrip_carries_payload_uid_and_gid(munged) -> None:
    with Munge(munged.socket) as mu:
        payload = b'{"id":1}\x00\xff binary too'
        cred = mu.encode(payload)
        assert cred.startswith(b"MUNGE:")
        decoded = mu.decode(cred)
        assert decoded == m.Decoded(payload, 0, 0)
        assert mu.decode(mu.encode(b"")).payload == b""


def test_decode_names_the_encoder_not_the_decoder(munged, nobody) -> None:
    cred = asyncio.run(nobody.run(ENCODE_AS_NOBODY, munged.socket))
    decoded = Munge(munged.socket).decode(cred.encode())
    assert (decoded.uid, decoded.payload) == (nobody.uid, b"from nobody")


def test_replayed_credential_is_refused(munged) -> None:
    mu = Munge(munged.socket)
    cred = mu.encode(b"once")
    mu.decode(cred)
    with pytest.raises(MungeError) as err:
        Munge(munged.socket).decode(cred)  # another context, same munged: still a replay
    assert err.value.code == m.EMUNGE_CRED_REPLAYED == 17
    assert "Replayed" in err.value.message


def test_altered_credential_is_refused(munged) -> None:
    mu = Munge(munged.socket)
    cred = mu.encode(b"payload that must not change")
    with pytest.raises(MungeError) as err:
        mu.decode(flip(cred))
    assert err.value.code in (m.EMUNGE_CRED_INVALID, m.EMUNGE_BAD_CRED, m.EMUNGE_BAD_MAC)
    with pytest.raises(MungeError):
        mu.decode(b"MUNGE:not-a-credential:")


def test_uid_restriction_binds_even_root(munged) -> None:
    mu = Munge(munged.socket)
    with pytest.raises(MungeError) as err:
        mu.decode(mu.encode(b"for nobody", uid_restriction=65534))
    assert err.value.code == m.EMUNGE_CRED_UNAUTHORIZED
    # the restriction is per call: the next credential is unrestricted again
    assert mu.decode(mu.encode(b"anyone")).payload == b"anyone"


def test_uid_restriction_set_once_still_binds_every_credential(munged) -> None:
    """The restriction is set on a context only when it changes: each credential sealed with
    the same one is bound by it, and the next other one is not."""
    mu = Munge(munged.socket)
    for _ in range(3):
        with pytest.raises(MungeError) as err:
            mu.decode(mu.encode(b"for nobody", uid_restriction=65534))
        assert err.value.code == m.EMUNGE_CRED_UNAUTHORIZED
    assert mu.decode(mu.encode(b"root", uid_restriction=0)).payload == b"root"
    assert mu.decode(mu.encode(b"anyone")).payload == b"anyone"
    with pytest.raises(MungeError):
        mu.decode(mu.encode(b"for nobody again", uid_restriction=65534))


def test_expired_credential_is_refused(munged) -> None:
    cred = Munge(munged.socket, ttl=1).encode(b"short-lived")
    time.sleep(2.5)  # MUNGE timestamps have 1 s resolution
    with pytest.raises(MungeError) as err:
        Munge(munged.socket).decode(cred)
    assert err.value.code == m.EMUNGE_CRED_EXPIRED == 15


def test_unreachable_munged(tmp_path) -> None:
    with pytest.raises(MungeError) as err:
        Munge(str(tmp_path / "no-such-socket")).encode(b"x")
    assert err.value.code in m.UNREACHABLE


def test_closed_context_raises(munged) -> None:
    mu = Munge(munged.socket)
    mu.close()
    mu.close()
    with pytest.raises(MungeError):
        mu.encode(b"x")


def test_one_binding_shared_by_threads(munged) -> None:
    mu = Munge(munged.socket)
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                payload = f"{n}:{i}".encode()
                assert mu.decode(mu.encode(payload)).payload == payload
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not failures
