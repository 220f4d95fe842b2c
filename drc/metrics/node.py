"""drcc metrics: cache hits and misses, token accesses, calls forwarded to DRCS, reachability.

All of it is in DRCC's memory already (the node cache's counters) or counted here as calls go
out to DRCS (:class:`CountedUpstream` wraps the link client, same ``call()``); a scrape
reads, never asks DRCS.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from drc.core.errors import Code, DrcError
from drc.metrics import LATENCY_BUCKETS, UNTIMED, outcome
from drc.metrics.common import CallMetrics, MetricsServer


class CountedUpstream:
    """A DRCS client (``call(method, args)``) whose calls are counted, timed and tell
    whether DRCS answers."""

    def __init__(self, upstream: Any, metrics: NodeMetrics) -> None:
        self._upstream = upstream
        self._m = metrics

    async def call(self, method: str, args: list[Any] | tuple[Any, ...] = ()) -> list[Any]:
        started = time.perf_counter()
        try:
            result = await self._upstream.call(method, args)
        except asyncio.CancelledError:  # DRCC stopping: not DRCS's doing
            raise
        except Exception as e:
            self._m.forwarded_call(method, time.perf_counter() - started, e)
            raise
        self._m.forwarded_call(method, time.perf_counter() - started, None)
        return result

    def send(self, method: str, args: list[Any], answered: Any) -> bool:
        """The upstream's fast lane (:meth:`drc.link.failover.FailoverLink.send`), counted."""
        send = getattr(self._upstream, "send", None)
        if send is None:
            return False
        started = time.perf_counter()

        def counted(ok: list[Any] | None, error: BaseException | None) -> None:
            if not isinstance(error, asyncio.CancelledError):
                self._m.forwarded_call(method, time.perf_counter() - started, error)
            answered(ok, error)

        return bool(send(method, args, counted))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)


class _NodeCollector(Collector):
    def __init__(self, metrics: NodeMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        service = self.m.service
        counters = service.cache.counters if service is not None else {}
        for name, key, doc in (
            ("drcc_cache_hits", "access_local", "Accesses answered from the node cache"),
            (
                "drcc_cache_misses",
                "access_forwarded",
                "Accesses the node cache could not answer (forwarded to DRCS)",
            ),
            ("drcc_token_accesses", "token_access_local", "Accesses with a token, checked here"),
            (
                "drcc_token_references_reported",
                "token_references_reported",
                "Token-based references reported to DRCS",
            ),
        ):
            yield CounterMetricFamily(name, doc, counters.get(key, 0))
        yield GaugeMetricFamily(
            "drcc_cache_associations",
            "(credential, holder) associations the node cache answers alone",
            len(service.cache.entries) if service is not None else 0,
        )
        yield GaugeMetricFamily(
            "drcc_pending_token_references",
            "Token accesses not yet reported to DRCS",
            len(service._pending_tokens) if service is not None else 0,
        )
        yield GaugeMetricFamily(
            "drcc_drcs_reachable",
            "1 when the last call to DRCS was answered, 0 when DRCS could not be reached",
            self.m.drcs_answering(),
        )
        yield GaugeMetricFamily(
            "drcc_change_feed_synced",
            "1 once the change feed from DRCS is live",
            1 if service is not None and service.synced.is_set() else 0,
        )


class NodeMetrics:
    """Everything drcc exposes; ``observe`` is the D-Bus exporter's per-request hook."""

    def __init__(self) -> None:
        self.service: Any = None  # the NodeService, once built (it needs the upstreams first)
        self.reachable = 0
        #: The node's ServerChoice, once its links exist: it knows at the first failed attempt
        #: (a call that fails over only returns when another DRCS answered or time ran out).
        self.choice: Any = None
        self.registry = CollectorRegistry()
        self.calls = CallMetrics(self.registry, "drcc")
        self.forwarded = Counter(
            "drcc_forwarded_calls",
            "Calls DRCC made to DRCS over the DRC link, by verb and outcome",
            ["verb", "outcome"],
            registry=self.registry,
        )
        self.forwarded_latency = Histogram(
            "drcc_forwarded_call_duration_seconds",
            "Round trip of calls to DRCS (the change feed's long poll excluded)",
            ["verb"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(self))
        self.http = MetricsServer(self.registry)

    def upstream(self, client: Any) -> CountedUpstream:
        return CountedUpstream(client, self)

    def observe(self, transport: str, verb: str, seconds: float, error: BaseException | None):
        self.calls.observe(transport, verb, seconds, error)

    def forwarded_call(self, verb: str, seconds: float, error: BaseException | None) -> None:
        self.forwarded.labels(verb, outcome(error)).inc()
        if verb not in UNTIMED:
            self.forwarded_latency.labels(verb).observe(seconds)
        unreachable = isinstance(error, DrcError) and error.code is Code.ECONNREFUSED
        if error is None or isinstance(error, DrcError):
            self.reachable = 0 if unreachable else 1

    def drcs_answering(self) -> int:
        if self.choice is not None:
            return int(self.choice.answering)
        return self.reachable

    def start(self, listen: str, where: str) -> None:
        self.http.start(listen, where)

    def stop(self) -> None:
        self.http.stop()
