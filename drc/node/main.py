"""``drcc``: the DRC node daemon, ``org.drc.Node`` on this node's system bus.

Identifies every caller from the kernel, answers what it can from the node cache and tokens,
and reaches DRCS over the DRC link (TCP, every frame a MUNGE credential).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from drc import config as drc_config
from drc.bus import BusExporter
from drc.core.tokens import load_key
from drc.daemon import daemon_parser, run_daemon, until_stopped
from drc.identity import boot_id, node_name
from drc.link import LinkClient, Munge
from drc.metrics import node_metrics
from drc.node.exports import BUS_NAME, INTERFACE, OBJECT_PATH, NodeExports
from drc.node.identity import Identifier
from drc.node.service import WATCH_SECONDS, NodeService
from drc.server.link import split_host_port
from drc.wlm import wlm_from_config

log = logging.getLogger("drc.node")


def _links(cfg: drc_config.Config) -> tuple[LinkClient, LinkClient]:
    link = cfg["link"]
    if not link["server"]:
        raise drc_config.ConfigError(f"{cfg.path}: [link] server (host:port of DRCS) is not set")
    host, port = split_host_port(link["server"], "[link] server")
    munge = Munge(link["munge_socket"] or None)
    calls = LinkClient(
        host, port, munge=munge, server_uid=link["server_uid"], timeout=link["timeout"]
    )
    # The change feed is a long poll: it must outwait WATCH_SECONDS.
    feed = LinkClient(
        host,
        port,
        munge=munge,
        server_uid=link["server_uid"],
        timeout=WATCH_SECONDS + link["timeout"],
    )
    return calls, feed


async def serve(cfg: drc_config.Config) -> None:
    node_cfg = cfg["node"]
    node = node_cfg["name"] or node_name()
    identifier = Identifier(node, wlm_from_config(cfg, node_cfg["wlm"]))
    calls, feed = _links(cfg)  # a missing [link] server is a config error: say it first
    metrics = node_metrics(cfg)  # None unless [metrics] drcc_listen
    if metrics:
        calls, feed = metrics.upstream(calls), metrics.upstream(feed)
    try:
        token_key = load_key(Path(cfg["tokens"]["key_file"]))
    except FileNotFoundError:
        log.warning("no token key at %s: access_with_token is disabled", cfg["tokens"]["key_file"])
        token_key = None
    service = NodeService(node, boot_id(node_cfg["boot_id_file"]), calls, feed, token_key=token_key)

    if metrics:
        metrics.service = service
        metrics.start(cfg["metrics"]["drcc_listen"], f"{cfg.path}: [metrics] drcc_listen")
    await service.start()
    exporter = BusExporter(
        NodeExports(service, identifier),
        bus_name=BUS_NAME,
        object_path=OBJECT_PATH,
        interface=INTERFACE,
        observer=metrics.observe if metrics else None,
    )
    await exporter.start(node_cfg["bus_address"] or None)
    log.info(
        "DRCC serving %s for node %s (DRCS at %s, wlm %s)",
        BUS_NAME,
        node,
        cfg["link"]["server"],
        node_cfg["wlm"],
    )
    await until_stopped()
    log.info("DRCC stopping")
    await exporter.stop()
    await service.stop()
    await calls.close()
    await feed.close()
    if metrics:
        metrics.stop()


def build_parser() -> argparse.ArgumentParser:
    return daemon_parser(
        "drcc",
        "DRC node daemon: serves org.drc.Node on the system bus to applications "
        "(libdrc, drc.client) and root hooks, and forwards to DRCS over the DRC link.",
    )


def main(argv: list[str] | None = None) -> int:
    return run_daemon(build_parser(), argv, serve)


if __name__ == "__main__":
    sys.exit(main())
