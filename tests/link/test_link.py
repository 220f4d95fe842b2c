"""The DRC link end to end: real munged, real TCP on 127.0.0.1, real users."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from drc.core.errors import Code, DrcError
from drc.embedded.polling import free_port
from drc.link import LinkClient, LinkPeer, LinkServer, Munge, SyncLinkClient
from drc.link.protocol import HEADER, Request, Response, pack_frame, read_frame

from helpers import run_bounded

NOBODY_CLIENT = """
import asyncio, json, sys
from drc.core.errors import DrcError
from drc.link.client import LinkClient
from drc.link.munge import Munge

async def main():
    client = LinkClient("127.0.0.1", int(sys.argv[3]), munge=Munge(sys.argv[2]),
                        server_uid=0, timeout=10)
    try:
        print(json.dumps({"ok": await client.call("Access", [1])}))
    except DrcError as err:
        print(json.dumps({"code": err.code.name, "message": err.message}))
    await client.close()

asyncio.run(main())
"""

# Plays DRCS without being DRCS: a plain user listening where a node daemon connects. It can't
# read the request (restricted to the DRCS uid), so it guesses id 1 and answers, as argv[2]
# says: "sealed" with its own genuine MUNGE credential, "keyed" with a key of its own (it could
# not read the request's).
IMPOSTOR_SERVER = """
import asyncio, os, sys
from drc.link.munge import Munge, MungeError
from drc.link.protocol import dumps, pack_frame, pack_keyed, read_frame

async def main():
    mu = Munge(sys.argv[1])
    done = asyncio.Event()

    async def serve(reader, writer):
        body = await read_frame(reader)
        try:
            mu.decode(body)
            print("read the request", flush=True)
        except MungeError as err:
            print(f"decode refused {err.code}", flush=True)
        forged = dumps({"id": 1, "ok": ["forged"]})
        if sys.argv[2] == "keyed":
            writer.write(pack_frame(pack_keyed(1, os.urandom(32), forged)))
        else:
            writer.write(pack_frame(mu.encode(forged)))
        await writer.drain()
        await reader.read()
        writer.close()
        done.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.wait_for(done.wait(), 20)

asyncio.run(main())
"""


class Recorder:
    """A handler that records every call it runs."""

    def __init__(self, result: Callable[[str, list[Any]], Any] | None = None) -> None:
        self.calls: list[tuple[LinkPeer, str, list[Any]]] = []
        self.result = result

    async def __call__(
        self, peer: LinkPeer, method: str, args: list[Any], rid: str | None
    ) -> list[Any]:
        self.calls.append((peer, method, args))
        if self.result is not None:
            return self.result(method, args)
        return [method, *args]


def tcp_server(handler: Any, munged: Any, **kw: Any) -> LinkServer:
    return LinkServer(handler, host="127.0.0.1", port=0, munge=Munge(munged.socket), **kw)


def tcp_client(server: LinkServer, munged: Any, **kw: Any) -> LinkClient:
    host, port = server.tcp_address
    kw.setdefault("server_uid", 0)
    return LinkClient(host, port, munge=Munge(munged.socket), **kw)


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server hung up without sending anything."""
    return await asyncio.wait_for(reader.read(), 10) == b""


async def assert_alive(server: LinkServer, munged: Any) -> None:
    async with tcp_client(server, munged) as client:
        assert await client.call("Ping", []) == ["Ping"]


def test_round_trip_over_tcp_carries_munge_uid(munged) -> None:
    handler = Recorder()

    async def body() -> None:
        async with tcp_server(handler, munged) as server, tcp_client(server, munged) as client:
            assert await client.call("Access", [7, "x", {"k": [1]}]) == [
                "Access",
                7,
                "x",
                {"k": [1]},
            ]
            assert await client.call("Release", (7,)) == ["Release", 7]

    run_bounded(body(), timeout=60)
    peer, method, args = handler.calls[0]
    assert (peer.uid, peer.gid, method) == (0, 0, "Access")
    assert args == [7, "x", {"k": [1]}]
    assert peer.address.startswith("127.0.0.1:")


def test_drc_errors_cross_the_link(munged) -> None:
    async def handler(peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> list[Any]:
        raise DrcError(Code.CRED_NOT_FOUND, f"credential {args[0]} not found")

    async def body() -> None:
        async with tcp_server(handler, munged) as server, tcp_client(server, munged) as client:
            with pytest.raises(DrcError) as err:
                await client.call("Access", [42])
            assert err.value.code == Code.CRED_NOT_FOUND
            assert err.value.message == "credential 42 not found"

    run_bounded(body(), timeout=60)


def test_handler_crash_is_an_internal_error_and_the_server_lives_on(munged, caplog) -> None:
    async def handler(peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> list[Any]:
        if method == "Boom":
            raise RuntimeError("bug")
        return ["fine"]

    async def body() -> None:
        async with tcp_server(handler, munged) as server, tcp_client(server, munged) as client:
            with pytest.raises(DrcError) as err:
                await client.call("Boom", [])
            assert err.value.code == Code.CRED_EXTERNAL_FAILURE  # as on the bus; not EINVAL
            assert await client.call("Other", []) == ["fine"]  # same connection

    run_bounded(body(), timeout=60)
    assert "Boom from uid 0 failed" in caplog.text


def test_concurrent_calls_are_pipelined_and_matched_by_id(munged) -> None:
    async def handler(peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> list[Any]:
        await asyncio.sleep(0.002 * (20 - args[0]))  # later calls finish first
        return [args[0] * 10]

    async def body() -> None:
        async with tcp_server(handler, munged) as server, tcp_client(server, munged) as client:
            results = await asyncio.gather(*(client.call("Slow", [i]) for i in range(20)))
            assert results == [[i * 10] for i in range(20)]

    run_bounded(body(), timeout=60)


def test_request_from_a_non_root_user_is_eperm_and_never_runs(munged, nobody) -> None:
    handler = Recorder()

    async def body() -> str:
        async with tcp_server(handler, munged) as server:
            return await nobody.run(NOBODY_CLIENT, "tcp", munged.socket, str(server.tcp_address[1]))

    out = json.loads(run_bounded(body(), timeout=60))
    assert out == {"code": "EPERM", "message": "DRC link: uid 65534 is not a node daemon"}
    assert handler.calls == []


#: ``rewrite(n, body)``: the frame bodies a client gets for the server's ``n``-th answer frame.
Rewrite = Callable[[int, bytes], list[bytes]]


class RecordingProxy:
    """Forwards 127.0.0.1 connections to the server, keeps what clients sent and the answer
    frames, and hands each answer to ``rewrite`` on its way back (an attacker on the path)."""

    def __init__(self, target: tuple[str, int], rewrite: Rewrite | None = None) -> None:
        self.target = target
        self.rewrite = rewrite or (lambda _n, body: [body])
        self.sent = bytearray()
        self.answers: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def requests() -> None:
            while data := await reader.read(65536):
                self.sent += data
                up_writer.write(data)
            up_writer.close()

        await asyncio.gather(requests(), self._answers(up_reader, writer), return_exceptions=True)

    async def _answers(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """The server's answers on their way back to the client."""
        while (body := await read_frame(up_reader)) is not None:
            self.answers.append(body)
            for out in self.rewrite(len(self.answers) - 1, body):
                writer.write(pack_frame(out))
        writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


def test_captured_frame_replayed_on_a_new_connection_is_refused(munged, caplog) -> None:
    handler = Recorder()

    async def body() -> None:
        async with tcp_server(handler, munged) as server:
            proxy = RecordingProxy(server.tcp_address)
            port = await proxy.start()
            async with LinkClient(
                "127.0.0.1", port, munge=Munge(munged.socket), server_uid=0
            ) as client:
                assert await client.call("Acquire", [0]) == ["Acquire", 0]
            await proxy.close()
            (length,) = HEADER.unpack(proxy.sent[: HEADER.size])
            frame = bytes(proxy.sent[: HEADER.size + length])

            reader, writer = await asyncio.open_connection(*server.tcp_address)
            writer.write(frame)
            assert await closed_by_server(reader)
            writer.close()
            await assert_alive(server, munged)

    run_bounded(body(), timeout=60)
    assert [method for _, method, _ in handler.calls] == ["Acquire", "Ping"]
    assert "Replayed credential" in caplog.text


def test_bit_flipped_frame_is_refused(munged, caplog) -> None:
    handler = Recorder()
    mu = Munge(munged.socket)

    async def body() -> None:
        async with tcp_server(handler, munged) as server:
            cred = bytearray(mu.encode(Request(1, "Grant", [1, 1001]).to_payload()))
            cred[len(cred) // 2] ^= 0x01  # one bit: still ASCII, no longer authentic
            reader, writer = await asyncio.open_connection(*server.tcp_address)
            writer.write(pack_frame(bytes(cred)))
            assert await closed_by_server(reader)
            writer.close()
            await assert_alive(server, munged)

    run_bounded(body(), timeout=60)
    assert [method for _, method, _ in handler.calls] == ["Ping"]
    assert "frame refused" in caplog.text


def impostor_answer_refused(munged: Any, nobody: Any, how: str) -> DrcError:
    """A node's call answered by :data:`IMPOSTOR_SERVER` (``how``: "sealed" or "keyed"): the
    error the call failed with, once the impostor was seen unable to read the request and the
    connection dropped."""

    async def body() -> DrcError:
        impostor = await nobody.spawn(IMPOSTOR_SERVER, munged.socket, how)
        try:
            assert impostor.stdout is not None
            port = int(await asyncio.wait_for(impostor.stdout.readline(), 20))
            client = LinkClient("127.0.0.1", port, munge=Munge(munged.socket), server_uid=0)
            try:
                with pytest.raises(DrcError) as err:
                    await client.call("Access", [1])
                assert client._conn is not None and not client._conn.alive  # dropped
            finally:
                await client.close()
            line = await asyncio.wait_for(impostor.stdout.readline(), 20)
            assert line.decode().strip() == "decode refused 18"  # the request was unreadable
            await asyncio.wait_for(impostor.wait(), 20)
            return err.value
        finally:
            if impostor.returncode is None:
                impostor.terminate()  # runuser passes SIGTERM on to the script
                try:
                    await asyncio.wait_for(impostor.wait(), 5)
                except TimeoutError:
                    impostor.kill()
                    await impostor.wait()

    return run_bounded(body(), timeout=60)


def test_client_refuses_a_response_from_another_uid(munged, nobody) -> None:
    refused = impostor_answer_refused(munged, nobody, "sealed")
    assert refused.code == Code.EPERM
    assert refused.message == "DRC link: response from uid 65534, expected DRCS uid 0"


def test_oversized_length_prefix_closes_the_connection(munged, caplog) -> None:
    handler = Recorder()

    async def body() -> None:
        async with tcp_server(handler, munged, max_frame=4096) as server:
            for prefix in (b"\xff\xff\xff\xff", HEADER.pack(4097), HEADER.pack(0)):
                reader, writer = await asyncio.open_connection(*server.tcp_address)
                writer.write(prefix)
                assert await closed_by_server(reader)
                writer.close()
            await assert_alive(server, munged)

    run_bounded(body(), timeout=60)
    assert "frame length 4294967295 outside 1..4096" in caplog.text


def test_malformed_payloads_never_crash_the_server(munged) -> None:
    handler = Recorder()
    mu = Munge(munged.socket)

    async def body() -> None:
        async with tcp_server(handler, munged) as server:
            for payload in (b"not json", b"[1,2]", b'{"method":"Access","args":[]}'):
                reader, writer = await asyncio.open_connection(*server.tcp_address)
                writer.write(pack_frame(mu.encode(payload)))
                assert await closed_by_server(reader)
                writer.close()
            # a request with an id but a broken shape gets an answer, not a hang-up
            reader, writer = await asyncio.open_connection(*server.tcp_address)
            writer.write(pack_frame(mu.encode(b'{"id":5,"method":"Access","args":"x"}')))
            body = await asyncio.wait_for(read_frame(reader), 10)
            assert body is not None
            response = Response.from_payload(mu.decode(body).payload)
            assert (response.id, response.error) == (5, "org.drc.Error.EINVAL")
            writer.close()
            await assert_alive(server, munged)

    run_bounded(body(), timeout=60)
    assert [method for _, method, _ in handler.calls] == ["Ping"]


def test_unreachable_or_silent_server_is_econnrefused_then_reconnects(munged) -> None:
    async def body() -> None:
        port = free_port()  # nobody listens on it
        client = LinkClient("127.0.0.1", port, munge=Munge(munged.socket), server_uid=0)
        with pytest.raises(DrcError) as err:
            await client.call("Access", [1])
        assert err.value.code == Code.ECONNREFUSED
        assert err.value.message.startswith(f"DRC link to 127.0.0.1:{port}: ")

        # a listener that never answers: timed out, also ECONNREFUSED
        held: list[asyncio.StreamWriter] = []  # Python >= 3.13 closes a dropped writer
        silent = await asyncio.start_server(lambda r, w: held.append(w), "127.0.0.1", 0)
        quiet = LinkClient(
            "127.0.0.1",
            silent.sockets[0].getsockname()[1],
            munge=Munge(munged.socket),
            server_uid=0,
            timeout=0.3,
        )
        with pytest.raises(DrcError) as err:
            await quiet.call("Access", [1])
        assert err.value.code == Code.ECONNREFUSED
        assert "no answer within 0.3 s" in err.value.message
        await quiet.close()
        silent.close()

        # DRCS restarts on the same port: the next call reconnects by itself
        server = LinkServer(Recorder(), host="127.0.0.1", port=port, munge=Munge(munged.socket))
        await server.start()
        assert await client.call("Access", [1]) == ["Access", 1]
        await server.close()
        with pytest.raises(DrcError) as err:
            await client.call("Access", [2])
        assert err.value.code == Code.ECONNREFUSED
        await server.start()
        assert await client.call("Access", [3]) == ["Access", 3]
        await client.close()
        await server.close()

    run_bounded(body(), timeout=60)


def test_allowed_uids_admits_other_daemon_users(munged, nobody) -> None:
    handler = Recorder()

    async def body() -> str:
        async with tcp_server(handler, munged, allowed_uids={0, 65534}) as server:
            port = str(server.tcp_address[1])
            return await nobody.run(NOBODY_CLIENT, "tcp", munged.socket, port)

    assert json.loads(run_bounded(body(), timeout=60)) == {"ok": ["Access", 1]}
    assert handler.calls[0][0].uid == 65534


def test_sync_client(munged) -> None:
    async def body() -> None:
        async with tcp_server(Recorder(), munged) as server:
            host, port = server.tcp_address

            def blocking() -> list[Any]:
                with SyncLinkClient(host, port, munge=Munge(munged.socket), server_uid=0) as c:
                    return [c.call("Access", [1]), c.call("Access", [2])]

            assert await asyncio.to_thread(blocking) == [["Access", 1], ["Access", 2]]

    run_bounded(body(), timeout=60)
