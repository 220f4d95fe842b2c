"""``drcc``: the DRC node daemon, ``org.drc.Node`` on this node's system bus.

Identifies every caller from the kernel, answers what it can from the node cache and tokens,
and reaches DRCS over the DRC link (TCP, every request a MUNGE credential).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from drc import config as drc_config
from drc.address import split_host_port
from drc.bus import BusExporter
from drc.core.errors import DrcError
from drc.core.tokens import load_key
from drc.daemon import daemon_parser, ready, run_daemon, until_stopped
from drc.export import exported
from drc.link import LinkClient, Munge
from drc.link.failover import FailoverLink, ServerChoice
from drc.metrics import node_metrics
from drc.node.caller import Identifier
from drc.node.cxi import CxiError, CxiUnavailable
from drc.node.exports import BUS_NAME, INTERFACE, OBJECT_PATH, NodeExports
from drc.node.service import NodeService
from drc.node.slingshot import CxiServices, Settings
from drc.nodeverbs import WATCH_MARGIN, WATCH_TIMEOUT_MAX, NodeVerbs
from drc.procfs import boot_id, node_name
from drc.wlm import wlm_from_config

log = logging.getLogger("drc.node")


def link_servers(cfg: drc_config.Config) -> list[str]:
    """``[link] servers``, or ``[link] server`` as the one-item case; each checked."""
    link = cfg["link"]
    servers = list(link["servers"]) or ([link["server"]] if link["server"] else [])
    if not servers:
        raise drc_config.ConfigError(
            f"{cfg.path}: [link] servers (host:port of every DRCS) is not set"
        )
    for server in servers:
        if not isinstance(server, str):
            raise drc_config.ConfigError(f"{cfg.path}: [link] servers: {server!r} is not a string")
        try:
            split_host_port(server, "[link] servers")
        except ValueError as e:
            raise drc_config.ConfigError(f"{cfg.path}: {e}") from None
    return servers


def _links(cfg: drc_config.Config, node: str) -> tuple[FailoverLink, FailoverLink]:
    """The calls and the change feed, following one DRCS together (see drc.link.failover)."""
    link = cfg["link"]
    choice = ServerChoice(link_servers(cfg))
    munge = Munge(link["munge_socket"] or None)
    timeout = float(link["timeout"])
    # One attempt may take a share of the call's time, so a silent server leaves time to
    # try the next one.
    attempt = max(1.0, timeout / len(choice.servers))

    def client(limit: float) -> Callable[[str], LinkClient]:
        def make(server: str) -> LinkClient:
            host, port = split_host_port(server, "[link] servers")
            return LinkClient(host, port, munge=munge, server_uid=link["server_uid"], timeout=limit)

        return make

    prefix = f"{node[:24]}-{os.urandom(6).hex()}"
    calls = FailoverLink(choice, client(attempt), timeout=timeout, rid_prefix=prefix)
    # The change feed is a long poll that DRCS answers at least every [link] heartbeat
    # seconds: no answer within the margin after that, and this DRCS is silent (drc.nodeverbs).
    if not 1 <= link["heartbeat"] <= WATCH_TIMEOUT_MAX:
        raise drc_config.ConfigError(
            f"{cfg.path}: [link] heartbeat must be 1 to {WATCH_TIMEOUT_MAX} seconds, "
            f"got {link['heartbeat']}"
        )
    silent = link["heartbeat"] + WATCH_MARGIN
    # A poll is not retried on the DRCS the node moves to: the feed starts afresh there with
    # a NodeMoved (drc.node.service), which also records the move.
    feed = FailoverLink(choice, client(silent), timeout=2 * silent, follow_moves=False)
    if not 0 <= link["standby"] <= 3600:
        raise drc_config.ConfigError(
            f"{cfg.path}: [link] standby must be 0 to 3600 seconds, got {link['standby']}"
        )
    return calls, feed


async def say_following(calls: FailoverLink, node: str) -> None:
    """Tell DRCS which server this node follows (``drccli status``); best effort. Said again
    when the node moved while saying it: the call was answered by another DRCS than named."""
    try:
        for _ in calls.choice.servers:
            server = calls.choice.current
            await calls.call(exported(NodeVerbs.node_follow).name, [node, server])
            if calls.choice.current == server:
                return
    except DrcError as e:
        log.debug("could not record the DRCS followed: %s", e)


def cxi_services(node: str, cfg: drc_config.Config, calls: LinkClient) -> CxiServices:
    """The CXI service manager; one clear error when libcxi or a NIC is missing."""
    try:
        settings = Settings.from_config(cfg["slingshot"])
    except ValueError as e:
        raise drc_config.ConfigError(f"{cfg.path}: {e}") from None
    try:
        return CxiServices(node, settings, calls)
    except CxiUnavailable as e:
        raise drc_config.ConfigError(f"[slingshot] libcxi: {e}") from None
    except CxiError as e:
        raise drc_config.ConfigError(f"[slingshot] nics {list(settings.nic_names)}: {e}") from None


async def serve(cfg: drc_config.Config) -> None:
    node_cfg = cfg["node"]
    node = node_cfg["name"] or node_name()
    identifier = Identifier(node, wlm_from_config(cfg, node_cfg["wlm"]))
    calls, feed = _links(cfg, node)  # a missing [link] server is a config error: say it first
    feed_link = feed  # itself, not counted: it keeps the standby link
    metrics = node_metrics(cfg)  # None unless [metrics] drcc_listen
    if metrics:
        calls, feed = metrics.upstream(calls), metrics.upstream(feed)
    try:
        token_key = load_key(Path(cfg["tokens"]["key_file"]))
    except FileNotFoundError:
        log.warning("no token key at %s: access_with_token is disabled", cfg["tokens"]["key_file"])
        token_key = None
    slingshot = None
    if cfg["server"]["provider"] == "slingshot":
        slingshot = cxi_services(node, cfg, calls)
    service = NodeService(
        node,
        boot_id(node_cfg["boot_id_file"]),
        calls,
        feed,
        token_key=token_key,
        slingshot=slingshot,
        heartbeat=cfg["link"]["heartbeat"],
    )
    service.job_end_everywhere = node_cfg["wlm"] == "alps"
    service.budget = float(cfg["link"]["timeout"])

    if metrics:
        metrics.service = service
        metrics.choice = calls.choice
        metrics.start(cfg["metrics"]["drcc_listen"], f"{cfg.path}: [metrics] drcc_listen")
    # The change feed records every later move (NodeMoved, or NodeFollow on an older DRCS).
    if not await service.start(lambda: calls.choice.current):
        await say_following(calls, node)
    # The feed's standby link: a fail-over's NodeMoved then needs no connect (drc.link.failover).
    standby = (
        asyncio.ensure_future(feed_link.keep_standby(cfg["link"]["standby"]))
        if cfg["link"]["standby"] and len(feed_link.choice.servers) > 1
        else None
    )
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
        ", ".join(calls.choice.servers),
        node_cfg["wlm"],
    )
    # DRCS said hello, the change feed runs, org.drc.Node is owned: ready for slurmd.
    ready(f"serving {BUS_NAME} for node {node}, following DRCS {calls.choice.current}")
    await until_stopped()
    log.info("DRCC stopping")
    await exporter.stop()
    if standby is not None:
        standby.cancel()
        await asyncio.gather(standby, return_exceptions=True)
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
