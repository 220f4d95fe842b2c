"""Keyed answers (drc/link/protocol.py): a node's request carries a fresh key inside its MUNGE
credential and DRCS answers with that key's MAC instead of a MUNGE seal. Written as the attacks
the MUNGE seal stopped: a forger that cannot read the request, an answer replayed to a later
request, an answer altered on the way, a key sent in clear. Real munged, TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ctypes
import os

import pytest
from test_link import (
    Recorder,
    RecordingProxy,
    Rewrite,
    impostor_answer_refused,
    tcp_client,
    tcp_server,
)

from drc.core.errors import Code, DrcError
from drc.link import LinkClient, Munge, protocol
from drc.link.protocol import (
    HEADER,
    KEY_BYTES,
    BadRequest,
    FrameError,
    Request,
    Response,
    dumps,
    feed_follow_up,
    open_keyed,
    pack_frame,
    pack_keyed,
    read_frame,
    split_keyed,
)

from helpers import run_bounded


def proxied_calls(munged, calls: list[str], rewrite: Rewrite | None = None):
    """Run ``calls`` (one at a time, on one connection) through an :class:`RecordingProxy`;
    (each call's result or DrcError, the proxy, the handler)."""
    handler = Recorder()
    outcomes: list[object] = []

    async def body() -> RecordingProxy:
        async with tcp_server(handler, munged) as server:
            proxy = RecordingProxy(server.tcp_address, rewrite)
            port = await proxy.start()
            client = LinkClient(
                "127.0.0.1", port, munge=Munge(munged.socket), server_uid=0, timeout=5
            )
            try:
                for method in calls:
                    try:
                        outcomes.append(await client.call(method, [7]))
                    except DrcError as err:
                        outcomes.append(err)
            finally:
                await client.close()
                await proxy.close()
            return proxy

    proxy = run_bounded(body(), timeout=60)
    return outcomes, proxy, handler


def test_a_nodes_answer_is_keyed_and_its_key_never_travels_in_clear(munged) -> None:
    outcomes, proxy, _ = proxied_calls(munged, ["Acquire"])
    assert outcomes == [["Acquire", 7]]
    (answer,) = proxy.answers
    assert split_keyed(answer)[0] == 1  # keyed, not a MUNGE credential (which starts with "MUNGE:")
    # The key is in the request's payload only: the credential on the wire is enciphered.
    (length,) = HEADER.unpack(proxy.sent[: HEADER.size])
    sent = bytes(proxy.sent[HEADER.size : HEADER.size + length])
    request = Munge(munged.socket).decode(sent, allow_replayed=True)  # DRCS decoded it first
    key = Request.from_payload(request.payload).key
    assert key is not None and len(key) == KEY_BYTES
    assert key.hex().encode() not in proxy.sent and key not in proxy.sent
    assert request.encrypted


def test_an_impostor_that_cannot_read_the_request_cannot_key_its_answer(munged, nobody) -> None:
    refused = impostor_answer_refused(munged, nobody, "keyed")
    assert refused.code == Code.ECONNREFUSED
    assert "not authenticated by its request's key" in refused.message


def test_an_answer_replayed_under_its_own_id_answers_nobody(munged) -> None:
    """The first answer, sent again ahead of the second request's: its request is no longer
    pending, so it is dropped, and the second call gets its own answer."""

    def replay_first(n: int, body: bytes) -> list[bytes]:
        return [body] if n == 0 else [first[0], body]

    first: list[bytes] = []

    def keep(n: int, body: bytes) -> list[bytes]:
        if n == 0:
            first.append(body)
        return replay_first(n, body)

    outcomes, _proxy, handler = proxied_calls(munged, ["Acquire", "Release"], keep)
    assert outcomes == [["Acquire", 7], ["Release", 7]]
    assert [method for _, method, _ in handler.calls] == ["Acquire", "Release"]


def test_an_answer_replayed_as_the_answer_to_a_later_request_drops_the_link(munged) -> None:
    """The first answer with its id rewritten to the second request's: the MAC was made with
    the first request's key, so the second call refuses it and nothing is taken from it."""
    first: list[bytes] = []

    def replay_as_second(n: int, body: bytes) -> list[bytes]:
        if n == 0:
            first.append(body)
            return [body]
        return [first[0].replace(b"#1:", b"#2:", 1)]

    outcomes, _, _ = proxied_calls(munged, ["Acquire", "Release"], replay_as_second)
    assert outcomes[0] == ["Acquire", 7]
    assert isinstance(outcomes[1], DrcError) and outcomes[1].code == Code.ECONNREFUSED
    assert "not authenticated by its request's key" in outcomes[1].message


def test_an_answer_altered_on_the_way_drops_the_link(munged) -> None:
    def alter(_n: int, body: bytes) -> list[bytes]:
        return [body.replace(b'"Acquire"', b'"Acquirf"')]

    outcomes, proxy, _ = proxied_calls(munged, ["Acquire"], alter)
    (err,) = outcomes
    assert isinstance(err, DrcError) and err.code == Code.ECONNREFUSED
    assert "not authenticated by its request's key" in err.message
    assert b'"Acquire"' in proxy.answers[0]  # the alteration hit the payload, not the head


def _sealed_request(munged, request: Request, *, cipher: int | None = None) -> bytes:
    """``request`` as a node daemon's frame; ``cipher``: a MUNGE cipher to force (0: none)."""
    mu = Munge(munged.socket)
    if cipher is None:
        return pack_frame(mu.encode(request.to_payload(), uid_restriction=0))
    ctx = mu._new_ctx(munged.socket, None)
    cred = ctypes.c_void_p()
    try:
        mu._set(ctx, 0, ctypes.c_int(cipher))  # MUNGE_OPT_CIPHER_TYPE
        payload = request.to_payload()
        assert mu._lib.munge_encode(ctypes.byref(cred), ctx, payload, len(payload)) == 0
        return pack_frame(ctypes.string_at(cred.value))
    finally:
        mu._lib.munge_ctx_destroy(ctx)


@pytest.mark.parametrize(
    ("key", "cipher", "why"),
    [
        (None, None, "no key: a client that sends none"),
        (os.urandom(KEY_BYTES), 0, "a key sent in clear (MUNGE cipher 'none') proves nothing"),
    ],
)
def test_a_request_without_a_secret_key_is_answered_sealed_by_munge(
    munged, key: bytes | None, cipher: int | None, why: str
) -> None:
    handler = Recorder()

    async def body() -> bytes:
        async with tcp_server(handler, munged) as server:
            reader, writer = await asyncio.open_connection(*server.tcp_address)
            writer.write(_sealed_request(munged, Request(5, "Ping", [], key=key), cipher=cipher))
            answer = await asyncio.wait_for(read_frame(reader), 10)
            writer.close()
            assert answer is not None
            return answer

    answer = run_bounded(body(), timeout=60)
    assert answer.startswith(b"MUNGE:"), why
    decoded = Munge(munged.socket).decode(answer)
    assert decoded.uid == 0
    assert Response.from_payload(decoded.payload) == Response(5, ok=["Ping"])


def test_keyed_answers_open_with_their_own_key_only() -> None:
    key, other = os.urandom(KEY_BYTES), os.urandom(KEY_BYTES)
    payload = dumps({"id": 9, "ok": [1]})
    body = pack_keyed(9, key, payload)
    split = split_keyed(body)
    assert split is not None and split[0] == 9
    sealed = split[1]
    assert open_keyed(9, sealed, key) == payload
    with pytest.raises(FrameError, match="not authenticated"):
        open_keyed(9, sealed, other)
    with pytest.raises(FrameError, match="not authenticated"):
        open_keyed(8, sealed, key)  # the answer to another request
    with pytest.raises(FrameError, match="not authenticated"):
        open_keyed(9, sealed[:-1], key)  # truncated
    with pytest.raises(FrameError, match="not authenticated"):
        open_keyed(9, b"\0" * 10, key)  # shorter than a MAC
    with pytest.raises(FrameError, match="valid id"):
        split_keyed(b"#x:" + body)
    assert split_keyed(b"MUNGE:AwQ") is None and split_keyed(b"@9:MUNGE:AwQ") is None


@pytest.mark.parametrize(
    "key",
    ["", "ab" * 31, "AB" * 32, "zz" * 32, 17, ["00" * 32]],
    ids=["empty", "short", "upper", "not-hex", "number", "list"],
)
def test_a_request_with_a_malformed_key_is_refused_with_its_id(key: object) -> None:
    with pytest.raises(BadRequest, match="key must be 64 lowercase hex digits") as err:
        Request.from_payload(dumps({"id": 4, "method": "Ping", "args": [], "key": key}))
    assert err.value.request_id == 4


def test_a_key_round_trips_is_forgotten_once_answered_and_a_continued_request_keeps_it(
    munged,
) -> None:
    key = os.urandom(KEY_BYTES)
    request = Request(3, "NodeConnectFeed", ["n1", "boot", "127.0.0.1:1", 30], "rid-1", key)
    assert Request.from_payload(request.to_payload()) == request
    follow = feed_follow_up(request, [[False, "generation", 5]])
    assert follow is not None and follow.key == key  # its second answer comes under that key

    async def body() -> None:
        async with tcp_server(Recorder(), munged) as server, tcp_client(server, munged) as c:
            assert await c.call("Ping", [1]) == ["Ping", 1]
            assert c._conn is not None and c._conn.keys == {}  # forgotten once answered

    run_bounded(body(), timeout=60)


def test_a_drcs_older_than_keyed_answers_is_asked_again_without_a_key(munged, monkeypatch) -> None:
    """A rolling upgrade, node daemons first: the old DRCS refuses the unknown "key" field
    before anything runs; the node asks again without one and takes sealed answers from it."""
    monkeypatch.setattr(protocol, "_REQUEST_FIELDS", frozenset(("id", "method", "args", "rid")))
    outcomes, proxy, handler = proxied_calls(munged, ["Acquire", "Release"])
    assert outcomes == [["Acquire", 7], ["Release", 7]]
    assert [method for _, method, _ in handler.calls] == ["Acquire", "Release"]  # once each
    refusal, *answers = proxy.answers
    assert [answer[:6] for answer in answers] == [b"MUNGE:", b"MUNGE:"]  # sealed, as it does
    decoded = Munge(munged.socket).decode(refusal, allow_replayed=True)  # the node read it
    refused = Response.from_payload(decoded.payload)
    assert refused.error == Code.EINVAL.dbus_name
    assert refused.message.startswith("unknown request fields") and "'key'" in refused.message
