"""``drcs``: the DRC credential server daemon.

Builds the core from the config file (store URL, provider, policy) and exports it on D-Bus as
``org.drc.Server``. Runs in the foreground; systemd or ``drc-embedded`` supervise it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import resource
import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from drc import config as drc_config
from drc.address import split_host_port
from drc.bus import BusExporter
from drc.core.errors import DrcError
from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.core.tokens import load_key
from drc.daemon import daemon_parser, ready, run_daemon, until_stopped
from drc.export import exported
from drc.link import LinkClient, Munge
from drc.metrics import server_metrics
from drc.nodeverbs import NodeVerbs
from drc.providers import make_provider
from drc.server.changes import SharedFeed
from drc.server.cleanup import retry_cleanups_forever, wants_cleanup_task
from drc.server.exports import ServerExports
from drc.server.group import GroupCommit
from drc.server.health import StoreHealth
from drc.server.heap import FreezeSurvivors
from drc.server.link_exporter import link_server
from drc.serververbs import BUS_NAME, INTERFACE, OBJECT_PATH
from drc.store.database import StoreTimeouts, claim_sqlite_store
from drc.store.sql import PeeweeStore
from drc.store.statements import CHANGE_CHANNEL

log = logging.getLogger("drc.server")


def build_service(cfg: drc_config.Config) -> CredentialService:
    server = cfg["server"]
    provider_name = server["provider"]
    provider = make_provider(provider_name, cfg[provider_name])
    policy = Policy(
        admin_gids=cfg.admin_gids(),
        persistent_uids=cfg.persistent_uids(),
        persistent_gids=cfg.persistent_gids(),
        user_limit=cfg.user_limit(provider.capacity),
    )
    store = PeeweeStore.from_url(server["database"], store_timeouts(cfg))
    return CredentialService(store, provider, policy)


def store_timeouts(cfg: drc_config.Config) -> StoreTimeouts:
    """[server]'s bounds on every database wait (see drcs(8), TIMEOUTS)."""
    server = cfg["server"]
    keys = {
        "connect": "db_connect_timeout",
        "statement": "db_statement_timeout",
        "lock": "db_lock_timeout",
        "idle_in_transaction": "db_idle_in_transaction_timeout",
        "keepalives_idle": "db_keepalives_idle",
        "keepalives_interval": "db_keepalives_interval",
        "keepalives_count": "db_keepalives_count",
        "busy": "sqlite_busy_timeout",
    }
    for key in [*keys.values(), "store_timeout"]:
        if server[key] <= 0:
            raise drc_config.ConfigError(
                f"{cfg.path}: [server] {key} must be a positive number, got {server[key]!r}"
            )
    return StoreTimeouts(**{field: server[key] for field, key in keys.items()})


def read_token_key(cfg: drc_config.Config) -> bytes | None:
    path = Path(cfg["tokens"]["key_file"])
    try:
        return load_key(path)
    except FileNotFoundError:
        log.warning("no token key at %s: tokens are disabled", path)
        return None


#: Descriptors DRCS wants beyond its link connections (database, bus, logs, munged).
SPARE_FDS = 256


def raise_fd_limit() -> int:
    """Soft RLIMIT_NOFILE up to the hard limit: every node daemon holds a DRC link
    connection (a descriptor) open, so 10,000 nodes need more than the usual soft 1024.
    Returns the link connections the limit leaves room for."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as e:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, e)
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(0, soft - SPARE_FDS)


async def serve(cfg: drc_config.Config) -> None:
    database = cfg["server"]["database"]
    sqlite_lock = claim_sqlite_store(database)  # one DRCS per SQLite store: say so, once
    room = raise_fd_limit()
    heap = FreezeSurvivors()  # short full collections with 10,000 connections (heap.py)
    heap.install()
    service = build_service(cfg)
    service.store.close()  # the loop's own connection: from now on only the store thread's
    exports = ServerExports(service, token_key=read_token_key(cfg), token_ttl=cfg["tokens"]["ttl"])
    # One group commit for D-Bus and DRC link verbs (handed to link_server below), on one
    # store thread: the event loop never waits for the database (see drc.server.group).
    exports.group = GroupCommit(
        service.store,
        threaded=True,
        health=StoreHealth(service.store.label),
        timeout=float(cfg["server"]["store_timeout"]),
    )
    if exports.group.timeout * 2 > cfg["link"]["timeout"]:
        log.warning(
            "[server] store_timeout (%g s) is over half of [link] timeout (%d s): a node daemon "
            "may give up on DRCS before DRCS gives up on its store",
            exports.group.timeout,
            cfg["link"]["timeout"],
        )
    exports.group_frees = not wants_cleanup_task(service)
    exports.name = cfg["link"]["listen"] or f"{socket.gethostname()} (no link)"
    exports.probe_servers = server_prober(cfg, cfg["link"]["listen"])
    feed_task = None
    if sqlite_lock is None and database.split(":", 1)[0] in ("postgres", "postgresql"):
        # Several DRCS may share this store: follow every server's commits, ours included.
        service.listeners.remove(exports.changes.record)
        bounds = store_timeouts(cfg).postgresql()
        bounds.pop("options")  # statement timeouts mean nothing to a connection that listens
        feed = SharedFeed(exports.changes, database, CHANGE_CHANNEL, params=bounds)
        feed_task = asyncio.create_task(feed.run())
        try:
            async with asyncio.timeout(10):
                await feed.listening.wait()
        except TimeoutError:
            log.warning("change feed: not listening yet; node daemons will resync when it is")
    metrics = server_metrics(cfg, service, exports)  # None unless [metrics] drcs_listen
    exports.group.hold_events(service.listeners)  # listeners run on the loop, after commit
    observe = metrics.observe if metrics else None
    if metrics:
        heap.observer = metrics.gc_full_seconds.observe
    exporter = BusExporter(
        exports,
        exports.nodes,  # a DRCC on the service node may reach DRCS on its bus
        bus_name=BUS_NAME,
        object_path=OBJECT_PATH,
        interface=INTERFACE,
        observer=observe,
    )
    address = cfg["server"]["bus_address"] or None
    await exporter.start(address)
    link = None
    if cfg["link"]["listen"]:
        link = link_server(
            exports.nodes,
            cfg["link"]["listen"],
            munge_socket=cfg["link"]["munge_socket"],
            node_uids=set(cfg["link"]["node_uids"]),
            observer=observe,
            group=exports.group,
            audit=exports.refused,
            frees_may_share=exports.group_frees,
        )
        await link.start()
        if metrics:
            metrics.link = link
        log.info(
            "DRC link listening on %s:%s (open-file limit leaves room for %d node connections)",
            *link.tcp_address,
            room,
        )
        if room < 10_000:
            log.info("for more nodes raise LimitNOFILE= in drcs.service (see drcs(8))")

    exports.described = info = await exports.group.alone(lambda _: exports.store_status())
    store, pool = info["store"], info["provider"]
    log.info(
        "DRCS serving %s: store %s %s (schema %s), provider %s with %s of %s free",
        BUS_NAME,
        store["backend"],
        store["database"],
        store["schema"],
        pool["name"],
        pool["free"],
        pool["capacity"],
    )

    if metrics:
        await metrics.start(cfg["metrics"]["drcs_listen"], f"{cfg.path}: [metrics] drcs_listen")

    cleanup = None
    if wants_cleanup_task(service):
        interval = service.cleanup.retry_interval
        cleanup = asyncio.create_task(retry_cleanups_forever(service, interval))

    # The one readiness point: the store answered (describe() above read it), the bus name
    # and the link listener are up. systemd (Type=notify) starts what waits for drcs now.
    ready(f"serving {BUS_NAME}, store {store['backend']}, link {cfg['link']['listen'] or 'off'}")
    await until_stopped()
    log.info("DRCS stopping")
    if cleanup is not None:
        cleanup.cancel()
    if feed_task is not None:
        feed_task.cancel()
    if link is not None:
        exports.changes.new_generation()  # end the nodes' long polls now, not in 5 s
        await link.close()
    await exporter.stop()
    if metrics:
        await metrics.stop()
    exports.group.close()


def server_prober(
    cfg: drc_config.Config, own: str
) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    """Ask every DRCS of ``[link] servers`` (and this one) who it is, over the DRC link."""
    link = cfg["link"]
    servers = list(dict.fromkeys([*link["servers"], *([link["server"]] if link["server"] else [])]))
    if own and own not in servers:
        servers.insert(0, own)

    async def one(server: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"server": server, "this": server == own}
        try:
            host, port = split_host_port(server, "[link] servers")
            client = LinkClient(
                host,
                port,
                munge=Munge(link["munge_socket"] or None),
                server_uid=link["server_uid"],
                timeout=2.0,
            )
            try:
                info = (await client.call(exported(NodeVerbs.server_info).name, []))[0]
            finally:
                await client.close()
        except (DrcError, ValueError) as e:
            return {**entry, "reachable": False, "detail": str(e)}
        return {
            **entry,
            "reachable": True,
            "nodes_connected": info["nodes_connected"],
            "detail": f"pid {info['pid']}, {info['nodes_connected']} node(s) following",
        }

    async def probe() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(one(s) for s in servers)))

    return probe


def build_parser() -> argparse.ArgumentParser:
    return daemon_parser(
        "drcs",
        "DRC credential server: owns credentials, grants, references, limits and "
        "the resource pool, and serves them on D-Bus as org.drc.Server.",
    )


def main(argv: list[str] | None = None) -> int:
    return run_daemon(build_parser(), argv, serve)


if __name__ == "__main__":
    sys.exit(main())
