"""How a node daemon reads answers (drc.link.client): the kernel hands it bytes in whatever
pieces the network made, into one read buffer per thread; every answer must come out whole
and to its own call. A proxy on 127.0.0.1 cuts the server's answers into awkward pieces: a
byte at a time, several answers in one read, an answer larger than the read buffer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_link import Recorder, RecordingProxy, tcp_server

from drc.link import LinkClient, Munge
from drc.link.client import READ_SIZE
from drc.link.protocol import pack_frame, read_frame

from helpers import run_bounded


class RechunkingProxy(RecordingProxy):
    """Holds the server's first ``hold`` answer frames, then sends them on as one stream cut
    into ``pieces`` (the last size repeats), each piece its own write and read."""

    def __init__(self, target: tuple[str, int], hold: int, pieces: list[int]) -> None:
        super().__init__(target)
        self.hold, self.pieces = hold, pieces

    async def _answers(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held = bytearray()
        for _ in range(self.hold):
            body = await read_frame(up_reader)
            assert body is not None
            held += pack_frame(body)
        at, turn = 0, 0
        while at < len(held):
            size = self.pieces[min(turn, len(self.pieces) - 1)]
            writer.write(held[at : at + size])
            await writer.drain()
            await asyncio.sleep(0.002)  # its own segment, its own read
            at, turn = at + size, turn + 1
        await super()._answers(up_reader, writer)


@pytest.mark.parametrize(
    "pieces",
    [[1] * 600 + [8192], [3, 700, 5, 9000], [READ_SIZE + 17, 1, 3 * READ_SIZE]],
    ids=["a-byte-at-a-time", "answers-split-and-joined", "more-than-a-read"],
)
def test_answers_cut_in_any_pieces_reach_their_own_calls(munged, pieces: list[int]) -> None:
    big = "x" * (2 * READ_SIZE + 123)  # one answer three reads long at least
    args: list[list[Any]] = [[1], [2, big], [3], [4, "y" * 999], [5]]

    async def body() -> None:
        async with tcp_server(Recorder(), munged) as server:
            proxy = RechunkingProxy(server.tcp_address, hold=len(args), pieces=pieces)
            port = await proxy.start()
            client = LinkClient(
                "127.0.0.1", port, munge=Munge(munged.socket), server_uid=0, timeout=30
            )
            try:
                answers = await asyncio.gather(*(client.call("Echo", a) for a in args))
                assert answers == [["Echo", *a] for a in args]
                assert await client.call("Echo", [6]) == ["Echo", 6]  # the stream goes on
            finally:
                await client.close()
                await proxy.close()

    run_bounded(body(), timeout=120)
