"""What both daemons' metrics are made of: per-request counting and the HTTP endpoint; and
one way to read them back (:func:`scrape`)."""

from __future__ import annotations

import logging
import threading
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    start_http_server,
)
from prometheus_client.parser import text_string_to_metric_families

from drc.metrics import LATENCY_BUCKETS, UNTIMED, is_loopback, outcome, parse_listen

log = logging.getLogger("drc.metrics")


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


#: A scrape: sample name -> {sorted (label, value) pairs: value}.
Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(address: str, timeout: float = 10.0) -> Samples:
    """One scrape of a drc daemon's metrics at ``host:port`` (tests and benchmarks read
    figures the daemon measured itself, such as its garbage-collection pauses)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=timeout) as reply:
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples
