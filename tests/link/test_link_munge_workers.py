"""The link server's MUNGE calls on worker threads, attacked and raced (real munged, real TCP).

A frame is decoded on a worker, but everything the link promises still holds: a replayed frame
closes its connection, a connection's frames run in arrival order whichever decode finishes
first, a frame from a uid that is no node daemon's is refused before its payload is parsed (and
an unauthenticated connection gets one frame decoded at a time), frames waiting for a decode
count against ``max_in_flight``, and closing the server with decodes in flight leaves no thread
and no error behind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest

from drc.core.errors import Code, DrcError
from drc.link import LinkClient, LinkPeer, LinkServer, Munge
from drc.link.munge import (
    EMUNGE_CRED_UNAUTHORIZED,
    EMUNGE_SNAFU,
    Decoded,
    MungeError,
    MungeWorkers,
    attempt,
)
from drc.link.protocol import Request, Response, pack_frame, read_frame

from helpers import run_bounded

ENCODE_AS_NOBODY = """
import sys
from drc.link.munge import Munge
sys.stdout.write(Munge(sys.argv[1]).encode(sys.argv[2].encode()).decode())
"""


class SlowMunge(Munge):
    """DRCS's munged client, each decode held ``delay(payload)`` s after munged answered;
    records the order decodes finished in and the most running at once."""

    def __init__(self, socket: str, delay: Any = lambda payload: 0.0) -> None:
        super().__init__(socket)
        self.delay = delay
        self.finished: list[bytes] = []
        self.running = 0
        self.most_running = 0
        self.lock = threading.Lock()

    def decode(self, cred: bytes, *, allow_replayed: bool = False) -> Decoded:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            decoded = super().decode(cred, allow_replayed=allow_replayed)
            time.sleep(self.delay(decoded.payload))
            with self.lock:
                self.finished.append(decoded.payload)
            return decoded
        finally:
            with self.lock:
                self.running -= 1


class Recorder:
    """A synchronous handler recording the ids it ran, in order."""

    def __init__(self) -> None:
        self.ran: list[int] = []

    def __call__(self, peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> Any:
        self.ran.append(args[0])
        return [args[0]]


def frame(mu: Munge, request_id: int, method: str = "Echo") -> bytes:
    return pack_frame(mu.encode(Request(request_id, method, [request_id]).to_payload()))


async def answers(reader: asyncio.StreamReader, mu: Munge, count: int) -> list[Response]:
    """The next ``count`` responses (fewer if the server hangs up first)."""
    got = []
    for _ in range(count):
        body = await asyncio.wait_for(read_frame(reader), 20)
        if body is None:
            break
        got.append(Response.from_payload(mu.decode(body).payload))
    return got


async def hung_up(reader: asyncio.StreamReader, mu: Munge) -> list[Response]:
    """Every response until the server closes the connection (bounded)."""
    got = []
    for _ in range(100):
        body = await asyncio.wait_for(read_frame(reader), 20)
        if body is None:
            return got
        got.append(Response.from_payload(mu.decode(body).payload))
    raise AssertionError("the server kept the connection open")


def server(handler: Any, munge: Munge, **kw: Any) -> LinkServer:
    """A link server whose every MUNGE call goes to the workers (none inline when idle)."""
    kw.setdefault("munge_inline_when_idle", False)
    return LinkServer(handler, host="127.0.0.1", port=0, munge=munge, **kw)


def test_replayed_frame_decoded_on_a_worker_closes_the_connection(munged, caplog) -> None:
    handler = Recorder()
    mu = Munge(munged.socket)

    async def body() -> list[Response]:
        async with server(handler, Munge(munged.socket)) as srv:
            first = frame(mu, 1)
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            writer.write(first)
            got = await answers(reader, mu, 1)
            # its replay and a good frame behind it, pipelined: decoded in parallel
            writer.write(first + frame(mu, 3))
            got += await hung_up(reader, mu)
            writer.close()
            return got

    got = run_bounded(body(), timeout=60)
    assert [r.id for r in got] == [1]
    assert handler.ran == [1]  # neither the replay nor the frame after it ran
    assert "Replayed credential" in caplog.text


def test_frames_run_in_arrival_order_when_decodes_finish_out_of_order(munged) -> None:
    handler = Recorder()
    slow = SlowMunge(munged.socket)
    mu = Munge(munged.socket)

    async def body() -> list[Response]:
        async with server(handler, slow, munge_workers=4) as srv:
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            writer.write(frame(mu, 1))  # authenticates the connection (decoded alone)
            await answers(reader, mu, 1)
            # frame 2 decodes slowest: with 4 workers the frames behind it finish first
            slow.delay = lambda payload: 0.3 if b'"args":[2]' in payload else 0.0
            writer.write(b"".join(frame(mu, i) for i in range(2, 9)))
            got = await answers(reader, mu, 7)
            writer.close()
            return got

    got = run_bounded(body(), timeout=60)
    assert handler.ran == list(range(1, 9))
    assert sorted(r.id for r in got) == list(range(2, 9))
    finished = [int(p.split(b'"args":[')[1].split(b"]")[0]) for p in slow.finished]
    assert finished[0] == 1 and finished[-1] == 2, finished  # 2 finished after 3..8


def test_non_node_uid_frame_refused_before_parsing_and_nothing_after_it_decoded(
    munged, nobody, monkeypatch
) -> None:
    handler = Recorder()
    slow = SlowMunge(munged.socket)
    mu = Munge(munged.socket)
    parsed: list[bytes] = []
    real_parse = Request.from_payload.__func__  # type: ignore[attr-defined]

    def spy(cls: type[Request], payload: bytes) -> Request:
        parsed.append(payload)
        return real_parse(cls, payload)

    monkeypatch.setattr(Request, "from_payload", classmethod(spy))
    # an id first (answered EPERM by it), then a payload the parser would choke on
    evil = '{"id":9,"method":"Echo","args":[9]' + "[" * 5000

    async def body() -> list[bytes]:
        cred = await nobody.run(ENCODE_AS_NOBODY, munged.socket, evil)
        async with server(handler, slow) as srv:
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            # a node daemon's frames pipelined behind it: never decoded, never run
            writer.write(pack_frame(cred.encode()) + b"".join(frame(mu, i) for i in (1, 2)))
            got = []
            while (body := await asyncio.wait_for(read_frame(reader), 20)) is not None:
                got.append(body)
                assert len(got) < 10, "the server kept the connection open"
            writer.close()
            return got

    got = run_bounded(body(), timeout=60)
    assert len(got) == 1  # the EPERM answer, sealed for nobody alone, then the hang-up
    with pytest.raises(MungeError) as err:
        mu.decode(got[0])
    assert err.value.code == EMUNGE_CRED_UNAUTHORIZED
    assert parsed == [] and handler.ran == []
    assert len(slow.finished) == 1  # unauthenticated: one frame decoded at a time


def test_frames_waiting_for_their_decode_count_against_max_in_flight(munged) -> None:
    handler = Recorder()
    slow = SlowMunge(munged.socket, lambda payload: 0.02)
    mu = Munge(munged.socket)

    async def body() -> list[Response]:
        async with server(handler, slow, max_in_flight=2, munge_workers=4) as srv:
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            writer.write(b"".join(frame(mu, i) for i in range(1, 21)))
            got = await answers(reader, mu, 20)
            writer.close()
            return got

    got = run_bounded(body(), timeout=60)
    assert sorted(r.id for r in got) == list(range(1, 21))
    assert handler.ran == list(range(1, 21))
    assert slow.most_running == 2  # never more decodes of the connection than max_in_flight


def test_closing_the_server_with_decodes_in_flight_leaves_no_thread_and_no_error(
    munged, caplog
) -> None:
    handler = Recorder()
    slow = SlowMunge(munged.socket, lambda payload: 0.3)
    mu = Munge(munged.socket)
    loop_errors: list[dict[str, Any]] = []

    async def body() -> tuple[int, int]:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: loop_errors.append(ctx))
        srv = server(handler, slow, munge_workers=3)
        await srv.start()
        streams = []
        for c in range(3):
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            writer.write(frame(mu, 100 * c + 1))
            streams.append((reader, writer))
        deadline = time.monotonic() + 10
        while slow.running < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        running = slow.running
        await srv.close()
        threads = sum(t.name.startswith("link-munge") for t in threading.enumerate())
        for reader, writer in streams:
            assert await asyncio.wait_for(reader.read(), 10) == b""
            writer.close()
        await asyncio.sleep(0.5)  # past the decodes' end: nothing acts on the closed transports
        return running, threads

    with caplog.at_level(logging.WARNING):
        running, threads = run_bounded(body(), timeout=60)
    assert running == 3  # the server closed with three decodes in flight
    assert threads == 0 and handler.ran == []
    assert loop_errors == []
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_busy_loop_is_woken_once_for_a_batch_of_finished_calls() -> None:
    class Job:
        def __init__(self, done: list[int], n: int) -> None:
            self.n, self.finished = n, done

        def run(self) -> None:
            pass

        def done(self) -> None:
            self.finished.append(self.n)

    async def body() -> tuple[list[int], int]:
        workers = MungeWorkers(2)
        wakes = 0
        deliver = workers._deliver

        def counted() -> None:
            nonlocal wakes
            wakes += 1
            deliver()

        workers._deliver = counted  # type: ignore[method-assign]
        done: list[int] = []
        for n in range(50):
            workers.submit(Job(done, n))
        time.sleep(0.5)  # the loop busy while every job finishes
        await asyncio.sleep(0.05)
        await workers.wait_closed()
        return done, wakes

    done, wakes = run_bounded(body(), timeout=30)
    assert sorted(done) == list(range(50))
    assert wakes == 1


def test_a_connection_closed_with_decodes_in_flight_drops_them(munged) -> None:
    handler = Recorder()
    slow = SlowMunge(munged.socket, lambda payload: 0.2)
    mu = Munge(munged.socket)

    async def body() -> int:
        async with server(handler, slow) as srv:
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            writer.write(frame(mu, 1))
            await answers(reader, mu, 1)
            writer.write(b"".join(frame(mu, i) for i in range(2, 6)))
            deadline = time.monotonic() + 10
            while slow.running < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            writer.transport.abort()  # the node goes while its frames are decoded
            while len(slow.finished) < 5 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert srv.connections == 0
            return len(slow.finished)

    assert run_bounded(body(), timeout=60) == 5
    assert handler.ran == [1]  # decoded after the node went: never run


@pytest.mark.parametrize("threads", [1, 4])
def test_munge_contexts_are_per_call_so_threads_do_not_wait(munged, threads: int) -> None:
    mu = Munge(munged.socket)
    seen: list[bytes] = []

    def work(n: int) -> None:
        for i in range(20):
            payload = f"{n}:{i}".encode()
            seen.append(mu.decode(mu.encode(payload)).payload)

    pool = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=30)
    assert sorted(seen) == sorted(f"{n}:{i}".encode() for n in range(threads) for i in range(20))
    assert len(mu._free_enc) <= threads and len(mu._free_dec) <= threads
    mu.close()
    assert mu._free_enc == mu._free_dec == []


def test_a_lone_request_on_an_idle_server_pays_no_thread_hop(munged) -> None:
    handler = Recorder()
    mu = Munge(munged.socket)

    async def body() -> tuple[list[Response], int, int]:
        async with server(handler, Munge(munged.socket), munge_inline_when_idle=True) as srv:
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            got = []
            for i in (1, 2, 3):  # one at a time: decoded and sealed on the loop
                writer.write(frame(mu, i))
                got += await answers(reader, mu, 1)
            idle = srv.workers.alive
            # a burst: the first frame and its answer inline, the rest on the workers
            writer.write(b"".join(frame(mu, i) for i in range(4, 12)))
            got += await answers(reader, mu, 8)
            busy = srv.workers.alive
            writer.close()
            return got, idle, busy

    got, idle, busy = run_bounded(body(), timeout=60)
    assert sorted(r.id for r in got) == list(range(1, 12))
    assert handler.ran == list(range(1, 12))
    assert idle == 0  # no worker thread was even started
    assert busy == 2


def test_client_on_workers_matches_pipelined_answers(munged) -> None:
    async def handler(peer: LinkPeer, method: str, args: list[Any], rid: str | None) -> Any:
        await asyncio.sleep(0.002 * (20 - args[0]))  # later calls answered first
        return [args[0] * 10]

    async def body() -> list[list[Any]]:
        workers = MungeWorkers(2, name="client-munge")
        async with server(handler, Munge(munged.socket)) as srv:
            host, port = srv.tcp_address
            client = LinkClient(
                host, port, munge=Munge(munged.socket), server_uid=0, workers=workers
            )
            async with client:
                results = await asyncio.gather(*(client.call("Slow", [i]) for i in range(20)))
        await workers.wait_closed()
        assert workers.alive == 0
        return results

    assert run_bounded(body(), timeout=60) == [[i * 10] for i in range(20)]


def test_client_on_workers_refuses_a_replayed_answer(munged) -> None:
    mu = Munge(munged.socket)

    async def body() -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_frame(reader)
            await read_frame(reader)
            answer = pack_frame(mu.encode(Response(1, ok=[1]).to_payload()))
            writer.write(answer + answer)  # the second: a replay, whatever id it claims
            await reader.read()
            writer.close()

        fake = await asyncio.start_server(serve, "127.0.0.1", 0)
        workers = MungeWorkers(2, name="client-munge")
        port = fake.sockets[0].getsockname()[1]
        client = LinkClient("127.0.0.1", port, munge=mu, server_uid=0, workers=workers)
        first, second = await asyncio.gather(
            client.call("A", [1]), client.call("B", [2]), return_exceptions=True
        )
        # decoded in parallel, either copy may reach munged first: the other is the replay,
        # refused, and the connection fails with every call still waiting on it
        assert first == [1] or isinstance(first, DrcError)
        assert isinstance(second, DrcError) and second.code == Code.EPERM
        assert "Replayed credential" in second.message
        await client.close()
        fake.close()
        await workers.wait_closed()

    run_bounded(body(), timeout=60)


def test_doorway_counts_an_unauthenticated_frame_waiting_for_its_decode(munged) -> None:
    slow = SlowMunge(munged.socket, lambda payload: 0.5)
    mu = Munge(munged.socket)

    async def body() -> tuple[int, int, int]:
        async with server(Recorder(), slow) as srv:
            first, second = frame(mu, 1), frame(mu, 2)
            reader, writer = await asyncio.open_connection(*srv.tcp_address)
            writer.write(first + second[:100])  # a frame, and the start of the next
            deadline = time.monotonic() + 10
            while slow.running < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            counted = srv.doorway.bytes
            await answers(reader, mu, 1)
            after = srv.doorway.bytes  # authenticated: no longer the doorway's
            writer.close()
            return len(first) - 4, counted, after

    body_bytes, counted, after = run_bounded(body(), timeout=60)
    assert counted == body_bytes + 100  # the frame at the workers and the partial one
    assert after == 0


def test_a_job_keeps_its_calls_outcome_and_a_bug_comes_back_as_a_munge_error() -> None:
    """What every worker job relies on: a refusal stays the MungeError munged gave, and any
    other exception becomes one (its frame is refused), never a value nor a lost job."""
    assert attempt(lambda: b"ok", "decode") == (b"ok", None)
    refused = MungeError(EMUNGE_CRED_UNAUTHORIZED, "unauthorized")

    def refuse() -> bytes:
        raise refused

    assert attempt(refuse, "decode") == (None, refused)
    value, error = attempt(lambda: 1 // 0, "encode")
    assert value is None and error is not None
    assert error.code == EMUNGE_SNAFU and error.message.startswith("encode failed: ")
