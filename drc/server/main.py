"""``drcs``: the DRC credential server daemon.

Builds the core from the config file (store URL, provider, policy) and exports it on D-Bus as
``org.drc.Server``. Runs in the foreground; systemd or ``drc-embedded`` supervise it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from drc import config as drc_config
from drc.bus import BusExporter
from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.core.tokens import load_key
from drc.daemon import daemon_parser, run_daemon, until_stopped
from drc.metrics import server_metrics
from drc.providers import make_provider
from drc.server.cleanup import retry_cleanups_forever, wants_cleanup_task
from drc.server.exports import BUS_NAME, INTERFACE, OBJECT_PATH, ServerExports
from drc.server.link import link_server
from drc.store.sql import PeeweeStore

log = logging.getLogger("drc.server")


def build_service(cfg: drc_config.Config) -> CredentialService:
    server = cfg["server"]
    provider_name = server["provider"]
    provider = make_provider(provider_name, cfg[provider_name])
    policy = Policy(
        admin_gids=cfg.admin_gids(),
        persistent_uids=cfg.persistent_uids(),
        persistent_gids=cfg.persistent_gids(),
    )
    return CredentialService(PeeweeStore.from_url(server["database"]), provider, policy)


def read_token_key(cfg: drc_config.Config) -> bytes | None:
    path = Path(cfg["tokens"]["key_file"])
    try:
        return load_key(path)
    except FileNotFoundError:
        log.warning("no token key at %s: tokens are disabled", path)
        return None


async def serve(cfg: drc_config.Config) -> None:
    service = build_service(cfg)
    exports = ServerExports(service, token_key=read_token_key(cfg), token_ttl=cfg["tokens"]["ttl"])
    metrics = server_metrics(cfg, service, exports)  # None unless [metrics] drcs_listen
    observe = metrics.observe if metrics else None
    exporter = BusExporter(
        exports, bus_name=BUS_NAME, object_path=OBJECT_PATH, interface=INTERFACE, observer=observe
    )
    address = cfg["server"]["bus_address"] or None
    await exporter.start(address)
    link = None
    if cfg["link"]["listen"]:
        link = link_server(
            exports,
            cfg["link"]["listen"],
            munge_socket=cfg["link"]["munge_socket"],
            node_uids=set(cfg["link"]["node_uids"]),
            observer=observe,
        )
        await link.start()
        if metrics:
            metrics.link = link
        log.info("DRC link listening on %s:%s", *link.tcp_address)

    info = service.describe()
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
        interval = float(getattr(service.provider, "cleanup_retry_interval", 60.0))
        cleanup = asyncio.create_task(retry_cleanups_forever(service, interval))

    await until_stopped()
    log.info("DRCS stopping")
    if cleanup is not None:
        cleanup.cancel()
    if link is not None:
        await link.close()
    await exporter.stop()
    if metrics:
        await metrics.stop()


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
