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
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from drc import config as drc_config
from drc.core.errors import Code, DrcError

log = logging.getLogger("drc.metrics")

#: Request latencies, in seconds: a cache hit is tens of microseconds, a DRCS round trip a
#: few milliseconds, a stuck store or link seconds.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip

#: Long polls wait by design (the change feed): their duration says nothing about load, so
#: they are counted but kept out of the latency histograms.
UNTIMED = frozenset({"NodeWatch"})

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
    """``PORT`` (localhost), ``HOST:PORT`` or ``[V6]:PORT`` → (host, port)."""
    text = value.strip()
    if text.isdigit():
        host, port = "127.0.0.1", text
    else:
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{where} must be PORT or HOST:PORT, got {value!r}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"{where}: port {port} is not in 1..65535")
    return host, int(port)


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


class CallMetrics:
    """Requests per transport and verb: how many, how they ended, how long they took."""

    def __init__(self, registry: CollectorRegistry, prefix: str) -> None:
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, memory, open fds
        self.requests = Counter(
            f"{prefix}_requests",
            "Requests answered, by transport (dbus, link), verb and outcome "
            "(ok or the DRC error name)",
            ["transport", "verb", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{prefix}_request_duration_seconds",
            "Time from a request's arrival to its answer, by transport and verb (the change "
            "feed's long poll excluded)",
            ["transport", "verb"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        # labels() takes a lock and builds keys on every call; the hot path (a DRCC cache hit
        # answers in tens of microseconds) looks its children up here instead.
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def observe(
        self, transport: str, verb: str, seconds: float, error: BaseException | None
    ) -> None:
        key = (transport, verb, "ok" if error is None else outcome(error))
        children = self._children.get(key)
        if children is None:
            timed = None if verb in UNTIMED else self.latency.labels(transport, verb)
            children = self._children[key] = (self.requests.labels(*key), timed)
        children[0].inc()
        if children[1] is not None:
            children[1].observe(seconds)


@dataclass
class MetricsServer:
    """The HTTP endpoint of one registry (prometheus_client's threaded server)."""

    registry: CollectorRegistry
    host: str = ""
    port: int = 0
    _httpd: object | None = field(default=None, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self, listen: str, where: str) -> None:
        host, port = parse_listen(listen, where)
        try:
            self._httpd, self._thread = start_http_server(port, host, self.registry)
        except OSError as e:
            raise RuntimeError(f"cannot serve metrics on {host}:{port} ({where}): {e}") from e
        self.host, self.port = host, self._httpd.server_address[1]  # type: ignore[attr-defined]
        if not is_loopback(host):
            log.warning("metrics served on %s:%d: reachable from other hosts", host, self.port)
        log.info("Prometheus metrics on http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()  # type: ignore[attr-defined]
            httpd.server_close()  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(5)
