"""A TCP proxy that can stop forwarding: the half-open connection of a gray failure.

:class:`PausableProxy` listens on a loopback address and forwards every connection to a
target (a database server). :meth:`PausableProxy.pause` stops forwarding in both directions
while every socket stays open: the peers see a connection that neither fails nor answers,
as when a database host's network path goes dark. :meth:`PausableProxy.resume` forwards
what was held and goes on. It runs its own event loop in a thread, and :meth:`close` (or the
``with`` block's end) closes every socket and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

from drc.embedded.polling import free_port


class PausableProxy:
    def __init__(self, target: tuple[str, int], listen: str = "127.0.0.31") -> None:
        self.target = target
        self.host, self.port = listen, free_port(listen)
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __enter__(self) -> PausableProxy:
        self._thread.start()
        try:
            self._run(self._start(), timeout=10)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, coro, timeout: float) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _start(self) -> None:
        self._flowing.set()
        self._server = await asyncio.start_server(self._connection, self.host, self.port)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._flowing.wait()  # while paused, a new connection is accepted, then silence
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()  # held, not forwarded, while paused
                writer.write(data)
                await writer.drain()
        writer.close()

    def pause(self) -> None:
        """Stop forwarding; every connection stays open."""
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def resume(self) -> None:
        self._loop.call_soon_threadsafe(self._flowing.set)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._run(self._close(), timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
