"""Prometheus metrics of drcs and drcc, served over HTTP from in-memory state only.

A scrape reads counters the daemons keep as they serve and gauges a daemon refreshed on its
own schedule; it never queries the store, so a Prometheus scraping every second costs the
database nothing. The core stays metric-free: calls are counted at the exporter boundary
(D-Bus, DRC link) and state changes are heard through the core's listener events.

Nothing is served unless ``[metrics] drcs_listen`` / ``drcc_listen`` names an address; a bare
port binds to localhost. Labels only ever carry bounded values (verb, transport, DRC error
name, limit scope, provider): never a credential id, uid or job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from drc import config as drc_config
from drc.address import split_host_port
from drc.core.errors import Code, DrcError
from drc.export import verbs
from drc.nodeverbs import NodeVerbs

#: Request latencies, in seconds: a cache hit is tens of microseconds, a DRCS round trip a
#: few milliseconds, a stuck store or link seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

#: Long polls wait by design (the change feed): their duration says nothing about load, so
#: they are counted but kept out of the latency histograms.
UNTIMED = verbs(NodeVerbs, where=lambda m: not m.timed)

#: ``observer(transport, verb, seconds, error)``: one call per request an exporter answered.
CallObserver = Callable[[str, str, float, BaseException | None], None]


def outcome(error: BaseException | None) -> str:
    """The bounded ``outcome`` label: ok, a DRC error name (EPERM …) or internal."""
    if error is None:
        return "ok"
    if isinstance(error, DrcError):
        return error.code.name
    return "internal"


def limit_scope(error: BaseException) -> str | None:
    """Which limit an ENOSPC refusal hit (``pool`` when the provider ran out), else None."""
    if isinstance(error, DrcError) and error.code is Code.ENOSPC:
        return error.limit_scope or "pool"
    return None


def parse_listen(value: str, where: str) -> tuple[str, int]:
    """A metrics address: ``PORT`` (loopback), ``HOST:PORT`` or ``[V6]:PORT``."""
    return split_host_port(value, where, bare_port="127.0.0.1")


def listen_from_config(cfg: drc_config.Config, key: str) -> str:
    """The ``[metrics]`` address of one daemon ("" when off), checked now: a typo is a
    config error at start, not a surprise at the first scrape."""
    value = cfg["metrics"][key]
    if value:
        try:
            parse_listen(value, f"[metrics] {key}")
        except ValueError as e:
            raise drc_config.ConfigError(f"{cfg.path}: {e}") from None
    return value


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def server_metrics(cfg: drc_config.Config, service: Any, exports: Any) -> Any:
    """drcs's :class:`~drc.metrics.server.ServerMetrics` when ``[metrics] drcs_listen`` is set,
    else None. prometheus_client is imported only then: a daemon without metrics pays nothing."""
    if not listen_from_config(cfg, "drcs_listen"):
        return None
    from drc.metrics.server import ServerMetrics

    m = cfg["metrics"]
    metrics = ServerMetrics(
        service, min_interval=m["state_min_interval"], max_age=m["state_max_age"]
    )
    metrics.exports = exports
    metrics.changing = verbs(exports, exports.nodes, where=lambda m: m.mutating)
    return metrics


def node_metrics(cfg: drc_config.Config) -> Any:
    """drcc's :class:`~drc.metrics.node.NodeMetrics` when ``[metrics] drcc_listen`` is set,
    else None."""
    if not listen_from_config(cfg, "drcc_listen"):
        return None
    from drc.metrics.node import NodeMetrics

    return NodeMetrics()
