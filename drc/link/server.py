"""The DRCS end of the DRC link: authenticate every frame, dispatch, answer.

Over TCP each request frame is decoded by *this* host's munged, so its replay cache sees every
credential the server accepts: a captured frame sent again is refused before the method runs.
Each response is encoded by the server (it carries the DRCS uid) and restricted to the
requester's uid, so only that uid can read it. On a unix socket the kernel's SO_PEERCRED
names the peer and payloads travel without MUNGE (embedded default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from drc.core.errors import Code, DrcError
from drc.link.munge import Munge, MungeError
from drc.link.protocol import MAX_FRAME, BadRequest, FrameError, Request, Response, pack_frame
from drc.link.protocol import read_frame as _read_frame

log = logging.getLogger(__name__)

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

#: The ``rid`` of the request a handler is running for (None without one); handlers that
#: make requests exactly-once read it here, so the handler signature stays the same.
REQUEST_ID: ContextVar[str | None] = ContextVar("drc_link_request_id", default=None)


@dataclass(frozen=True)
class LinkPeer:
    """Who sent a request, as MUNGE or the kernel vouches for it (never as the peer claims)."""

    uid: int
    gid: int
    transport: Literal["munge", "unix"]
    address: str = ""


Handler = Callable[[LinkPeer, str, list[Any]], Awaitable[list[Any]]]


def split_host_port(value: str, what: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` too) of a DRC link address; ValueError naming ``what``."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"{what} must be host:port, got {value!r}")
    return host.strip("[]"), int(port)


async def _drain(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await writer.drain()


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of a connected unix socket's peer, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return _UCRED.unpack(raw)


class LinkServer:
    """Serve ``handler`` on TCP ``host:port`` (MUNGE) and/or a unix socket (SO_PEERCRED).

    Requests are read in order per connection (so authentication and replay checks happen
    before anything runs) and then handled concurrently, at most ``max_in_flight`` per
    connection; responses go back as they complete, matched by id.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        host: str | None = None,
        port: int = 0,
        munge: Munge | None = None,
        unix_path: str | None = None,
        unix_mode: int = 0o600,
        allowed_uids: Iterable[int] = (0,),
        max_frame: int = MAX_FRAME,
        max_in_flight: int = 64,
    ) -> None:
        if host is None and unix_path is None:
            raise ValueError("LinkServer needs host or unix_path")
        if host is not None and munge is None:
            raise ValueError("a TCP DRC link needs a Munge context")
        self.handler = handler
        self.host, self.port = host, port
        self.munge = munge
        self.unix_path, self.unix_mode = unix_path, unix_mode
        self.allowed_uids = frozenset(allowed_uids)
        self.max_frame = max_frame
        self.max_in_flight = max_in_flight
        self._servers: list[asyncio.Server] = []
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def connections(self) -> int:
        """Connections open right now (node daemons; metrics)."""
        return len(self._writers)

    @property
    def tcp_address(self) -> tuple[str, int]:
        """The bound (host, port), useful with ``port=0``."""
        for server in self._servers:
            for sock in server.sockets:
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    return sock.getsockname()[:2]
        raise RuntimeError("LinkServer has no TCP listener")

    async def start(self) -> None:
        if self.host is not None:
            self._servers.append(
                await asyncio.start_server(self._on_tcp, self.host, self.port, reuse_address=True)
            )
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)
            server = await asyncio.start_unix_server(self._on_unix, self.unix_path)
            os.chmod(self.unix_path, self.unix_mode)
            self._servers.append(server)

    async def close(self, grace: float = 5.0) -> None:
        """Stop listening, drop connections, let running handlers finish for ``grace`` s."""
        for server in self._servers:
            server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()
        if self.unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.unix_path)

    async def __aenter__(self) -> LinkServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _on_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        await self._serve(reader, writer, None, f"{host}:{port}")

    async def _on_unix(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid, uid, gid = peer_credentials(writer.get_extra_info("socket"))
        peer = LinkPeer(uid, gid, "unix", f"unix pid {pid}")
        await self._serve(reader, writer, peer, peer.address)

    async def _serve(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        unix_peer: LinkPeer | None,
        address: str,
    ) -> None:
        self._writers.add(writer)
        slots = asyncio.Semaphore(self.max_in_flight)
        try:
            while True:
                try:
                    body = await _read_frame(reader, self.max_frame)
                except FrameError as err:
                    log.warning("DRC link %s: %s; closing", address, err)
                    return
                except ConnectionError:
                    return
                if body is None:
                    return
                if unix_peer is None:
                    assert self.munge is not None
                    try:
                        decoded = self.munge.decode(body)
                    except MungeError as err:
                        # replayed, altered, expired, or meant for someone else: never run it
                        log.warning("DRC link %s: frame refused: %s; closing", address, err)
                        return
                    peer = LinkPeer(decoded.uid, decoded.gid, "munge", address)
                    payload = decoded.payload
                else:
                    peer, payload = unix_peer, body
                try:
                    request = Request.from_payload(payload)
                except BadRequest as err:
                    if err.request_id is None:
                        log.warning("DRC link %s uid %d: %s; closing", address, peer.uid, err)
                        return
                    log.warning("DRC link %s uid %d: %s", address, peer.uid, err)
                    error = Response(err.request_id, error=Code.EINVAL.dbus_name, message=str(err))
                    self._send(writer, peer, error)
                    await _drain(writer)
                    continue
                except FrameError as err:
                    log.warning("DRC link %s uid %d: %s; closing", address, peer.uid, err)
                    return
                if peer.uid not in self.allowed_uids:
                    log.warning(
                        "DRC link %s: uid %d is not a node daemon (%s refused)",
                        address,
                        peer.uid,
                        request.method,
                    )
                    text = f"DRC link: uid {peer.uid} is not a node daemon"
                    self._send(
                        writer, peer, Response(request.id, error=Code.EPERM.dbus_name, message=text)
                    )
                    await _drain(writer)
                    continue
                await slots.acquire()
                task = asyncio.create_task(self._dispatch(writer, peer, request, slots))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _dispatch(
        self,
        writer: asyncio.StreamWriter,
        peer: LinkPeer,
        request: Request,
        slots: asyncio.Semaphore,
    ) -> None:
        REQUEST_ID.set(request.rid)  # this task's own context
        try:
            try:
                result = await self.handler(peer, request.method, request.args)
                response = Response(request.id, ok=list(result))
            except DrcError as err:
                response = Response(request.id, error=err.code.dbus_name, message=err.message)
            except Exception:
                log.exception("DRC link: %s from uid %d failed", request.method, peer.uid)
                response = Response(
                    request.id,
                    error=Code.EINVAL.dbus_name,
                    message=f"DRC link: internal error in {request.method}",
                )
            self._send(writer, peer, response)
            await _drain(writer)  # a peer that stops reading stalls its own connection only
        finally:
            slots.release()

    def _send(self, writer: asyncio.StreamWriter, peer: LinkPeer, response: Response) -> None:
        """Encode (for MUNGE: as the server, readable only by the requester) and queue."""
        if writer.is_closing():
            return
        try:
            try:
                body = response.to_payload()
            except (TypeError, ValueError) as err:
                log.error("DRC link: response %d not serializable: %s", response.id, err)
                body = Response(
                    response.id, error=Code.EINVAL.dbus_name, message="DRC link: bad result"
                ).to_payload()
            if peer.transport == "munge":
                assert self.munge is not None
                body = self.munge.encode(body, uid_restriction=peer.uid)
            if len(body) > self.max_frame:
                text = f"DRC link: response of {len(body)} bytes exceeds the frame limit"
                log.error("%s", text)
                body = Response(response.id, error=Code.EINVAL.dbus_name, message=text).to_payload()
                if peer.transport == "munge":
                    assert self.munge is not None
                    body = self.munge.encode(body, uid_restriction=peer.uid)
            writer.write(pack_frame(body, self.max_frame))
        except MungeError as err:
            log.error("DRC link %s: cannot encode response: %s; closing", peer.address, err)
            writer.close()
