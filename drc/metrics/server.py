"""drcs metrics: credentials, references, pool, refusals, requests, link, change feed, store.

State gauges (credentials by state, references, pool use, cleanups pending, nodes known) come
from one store snapshot the daemon takes *after changes* — at most once per
``state_min_interval`` seconds, and at least every ``state_max_age`` seconds, because other
DRCS sharing a PostgreSQL database change it too — never from a scrape. Everything else is
counted as it happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from drc.core.model import State
from drc.core.service import CredentialService
from drc.export import verbs
from drc.metrics import LATENCY_BUCKETS, limit_scope
from drc.metrics.common import CallMetrics, MetricsServer
from drc.nodeverbs import NodeVerbs

log = logging.getLogger("drc.metrics")

#: What a provider hands out, for the ``resource`` label of the pool gauges.
RESOURCE_OF = {"pool": "cookies", "alps": "pdomains", "slingshot": "vnis"}


@dataclass
class StateSnapshot:
    """What the store said at ``taken`` (monotonic seconds; 0 = never)."""

    taken: float = 0.0
    by_state: dict[str, int] = field(default_factory=dict)
    references: int = 0
    provider: dict[str, Any] = field(default_factory=dict)
    cleanups_pending: int = 0
    nodes_known: int = 0


def read_state(service: CredentialService) -> StateSnapshot:
    """One read-only transaction: the numbers behind the state gauges."""
    with service.store.snapshot() as tx:
        creds = tx.list_credentials()
        provider = service.provider.describe(tx)
        pending = len(tx.pending_cleanups()) if service.cleanup.enabled else 0
        nodes = tx.node_count()
    by_state = Tally(c.state.value for c in creds)
    return StateSnapshot(
        taken=time.monotonic(),
        by_state={s.value: by_state.get(s.value, 0) for s in State},
        references=sum(c.refs for c in creds),
        provider=dict(provider),
        cleanups_pending=pending,
        nodes_known=nodes,
    )


class TimedStore:
    """The store, with every transaction's duration observed (kind: write or read)."""

    def __init__(self, store: Any, seconds: Histogram) -> None:
        self._store = store
        self._write = seconds.labels("write")
        self._read = seconds.labels("read")

    def transaction(self, unit: Any = None, **holds: Any) -> AbstractContextManager[Any]:
        return self._timed(self._store.transaction(unit, **holds), self._write)

    def snapshot(self) -> AbstractContextManager[Any]:
        return self._timed(self._store.snapshot(), self._read)

    @staticmethod
    @contextlib.contextmanager
    def _timed(inner: AbstractContextManager[Any], histogram: Any) -> Iterator[Any]:
        started = time.perf_counter()
        try:
            with inner as tx:
                yield tx
        finally:
            histogram.observe(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _StateCollector(Collector):
    def __init__(self, metrics: ServerMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[GaugeMetricFamily]:
        m, s = self.m, self.m.state
        by_state = GaugeMetricFamily(
            "drcs_credentials", "Live credentials by state", labels=["state"]
        )
        for state, count in sorted(s.by_state.items()):
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily(
            "drcs_credentials_live", "Live credentials (every state)", sum(s.by_state.values())
        )
        yield GaugeMetricFamily(
            "drcs_references", "References held (jobs, processes, pins)", s.references
        )
        labels = ["provider", "resource"]
        name = str(s.provider.get("name", m.service.provider.name))
        key = [name, RESOURCE_OF.get(name, "slots")]
        for metric, field_, doc in (
            ("drcs_pool_size", "capacity", "Credentials the provider can back at once"),
            ("drcs_pool_used", "allocated", "Provider resources allocated to live credentials"),
            ("drcs_pool_free", "free", "Provider resources free"),
        ):
            family = GaugeMetricFamily(metric, doc, labels=labels)
            family.add_metric(key, int(s.provider.get(field_, 0)))
            yield family
        yield GaugeMetricFamily(
            "drcs_cleanups_pending",
            "External objects of freed credentials still to remove (ALPS pdomains)",
            s.cleanups_pending,
        )
        yield GaugeMetricFamily(
            "drcs_nodes_known", "Node daemons that ever said hello", s.nodes_known
        )
        yield GaugeMetricFamily(
            "drcs_nodes_following",
            "Node daemons following the change feed right now",
            m.exports.changes.followers if m.exports is not None else 0,
        )
        yield GaugeMetricFamily(
            "drcs_link_connections",
            "Open DRC link connections (node daemons)",
            m.link.connections if m.link is not None else 0,
        )
        age = time.monotonic() - s.taken if s.taken else float("nan")
        yield GaugeMetricFamily(
            "drcs_state_age_seconds", "Age of the store snapshot behind the state gauges", age
        )
        health = getattr(getattr(m.exports, "group", None), "health", None)  # server/health.py
        if health is not None:
            yield GaugeMetricFamily(
                "drcs_store_up", "1 while the store answers, 0 while it does not", health.answering
            )
            yield GaugeMetricFamily(
                "drcs_store_unanswered_seconds",
                "Seconds since the store stopped answering (0 while it answers)",
                health.unanswered_seconds(),
            )


class ServerMetrics:
    """Everything drcs exposes; ``observe`` is the exporters' per-request hook."""

    def __init__(
        self,
        service: CredentialService,
        *,
        min_interval: float = 5.0,
        max_age: float = 60.0,
    ) -> None:
        self.service = service
        self.exports: Any = None
        self.link: Any = None
        #: Verbs after which the state gauges refresh: those declared ``mutating``.
        self.changing: frozenset[str] = verbs(NodeVerbs, where=lambda m: m.mutating)
        self.min_interval, self.max_age = min_interval, max_age
        self.registry = CollectorRegistry()
        self.calls = CallMetrics(self.registry, "drcs")
        self.refusals = Counter(
            "drcs_limit_refusals",
            "Acquires refused with ENOSPC, by the limit scope that refused (pool: provider "
            "exhausted)",
            ["scope"],
            registry=self.registry,
        )
        self.changes = Counter(
            "drcs_changes",
            "Revocations and frees announced to node daemons",
            ["kind"],
            registry=self.registry,
        )
        self.store_seconds = Histogram(
            "drcs_store_transaction_seconds",
            "Duration of store transactions (write: a verb's transaction; read: a snapshot)",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gc_full_seconds = Histogram(
            "drcs_gc_full_seconds",
            "How long each full garbage collection stopped drcs (see drcs(8), TROUBLESHOOTING)",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StateCollector(self))
        self.state = StateSnapshot()
        self.http = MetricsServer(self.registry)
        self._dirty = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        service.store = TimedStore(service.store, self.store_seconds)
        service.cleanup.store = service.store
        service.listeners.append(self._on_change)

    # -- hooks -----------------------------------------------------------------------------

    def observe(self, transport: str, verb: str, seconds: float, error: BaseException | None):
        """One answered request (the exporters call this); changes schedule a refresh."""
        self.calls.observe(transport, verb, seconds, error)
        if error is not None:
            scope = limit_scope(error)
            if scope is not None:
                self.refusals.labels(scope).inc()
        elif verb in self.changing:
            self._dirty.set()

    def _on_change(self, kind: str, credential: int, value: int) -> None:
        self.changes.labels(kind).inc()
        self._dirty.set()

    # -- life cycle ------------------------------------------------------------------------

    async def start(self, listen: str, where: str) -> None:
        await self.refresh()
        self.http.start(listen, where)
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.http.stop()

    async def refresh(self) -> None:
        """Re-read the state gauges (in a thread: the store may be a network hop away)."""
        try:
            self.state = await asyncio.to_thread(read_state, self.service)
        except Exception:
            log.warning("metrics: cannot read the store; state gauges kept", exc_info=True)

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self.max_age)
            await asyncio.sleep(self.min_interval)  # let a burst of changes settle
            self._dirty.clear()
            await self.refresh()
