"""The metrics modules on their own: config, what a scrape reads, how outcomes are labelled."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from drc import config
from drc.core.errors import Code, DrcError
from drc.core.model import LimitScope
from drc.core.service import CredentialService
from drc.metrics import limit_scope, node_metrics, outcome, parse_listen, server_metrics
from drc.metrics.node import NodeMetrics
from drc.metrics.server import ServerMetrics
from drc.providers.pool import PoolProvider
from drc.store.sql import PeeweeStore

from helpers import ALICE, ROOT, in_job


def scrape(registry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        s.name + str(sorted(s.labels.items())): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


def cfg_with(tmp_path, text: str) -> config.Config:
    path = tmp_path / "drc.conf"
    path.write_text(text)
    return config.load(path)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9820", ("127.0.0.1", 9820)),
        ("0.0.0.0:9820", ("0.0.0.0", 9820)),
        ("[::1]:9820", ("::1", 9820)),
        ("svc1:9820", ("svc1", 9820)),
    ],
)
def test_listen_address_a_bare_port_is_localhost(value, expected):
    assert parse_listen(value, "[metrics] drcs_listen") == expected


@pytest.mark.parametrize("value", ["metrics", "host:", ":9820", "99999", "0", "h:p"])
def test_a_bad_listen_address_is_a_config_error_naming_the_key(tmp_path, service, value):
    cfg = cfg_with(tmp_path, f'[metrics]\ndrcs_listen = "{value}"\ndrcc_listen = "{value}"\n')
    with pytest.raises(config.ConfigError, match=r"\[metrics\] drcs_listen"):
        server_metrics(cfg, service, None)
    with pytest.raises(config.ConfigError, match=r"\[metrics\] drcc_listen"):
        node_metrics(cfg)


def test_metrics_are_off_by_default(service):
    cfg = config.Config(None, config.defaults())
    assert server_metrics(cfg, service, None) is None
    assert node_metrics(cfg) is None
    listeners = list(service.listeners)
    assert server_metrics(cfg, service, None) is None and service.listeners == listeners


def test_a_scrape_runs_no_sql_statement(tmp_path, pool):
    """The state gauges come from memory: a scrape runs no SQL at all."""
    store = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db")
    try:
        service = CredentialService(store, pool)
        metrics = ServerMetrics(service)
        for job in (1, 2, 3):
            service.acquire(in_job(ALICE, job), 0)
        asyncio.run(metrics.refresh())
        statements: list[str] = []
        store.db.connection().set_trace_callback(statements.append)
        for _ in range(20):
            samples = scrape(metrics.registry)
        assert statements == []
        assert samples["drcs_credentials_live[]"] == 3
        assert samples["drcs_credentials[('state', 'ACTIVE')]"] == 3
        assert samples["drcs_pool_used[('provider', 'pool'), ('resource', 'cookies')]"] == 3
        service.acquire(in_job(ALICE, 4), 0)  # and this one ran SQL: the trace works
        assert statements
    finally:
        store.close()


def test_store_transactions_are_timed_by_kind(service):
    metrics = ServerMetrics(service)
    service.acquire(in_job(ALICE, 7), 0)
    with service.store.snapshot():
        pass
    samples = scrape(metrics.registry)
    assert samples["drcs_store_transaction_seconds_count[('kind', 'write')]"] == 1
    assert samples["drcs_store_transaction_seconds_count[('kind', 'read')]"] == 1


def test_refusals_are_labelled_by_limit_scope_or_pool(service):
    service.set_limit(ROOT, LimitScope.USER_DEFAULT, 0, 1)
    service.acquire(in_job(ALICE, 1), 0)
    with pytest.raises(DrcError) as by_limit:
        service.acquire(in_job(ALICE, 1), 0)
    assert limit_scope(by_limit.value) == "user-default"
    assert outcome(by_limit.value) == "ENOSPC"


def test_an_exhausted_pool_is_the_pool_scope(store):
    tiny = CredentialService(store, PoolProvider(cookie_min=5, cookie_max=5))
    tiny.acquire(in_job(ALICE, 1), 0)
    with pytest.raises(DrcError) as exhausted:
        tiny.acquire(in_job(ALICE, 2), 0)
    assert limit_scope(exhausted.value) == "pool"
    assert limit_scope(DrcError(Code.EPERM)) is None
    assert outcome(None) == "ok" and outcome(RuntimeError()) == "internal"


class Upstream:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    async def call(self, method, args=()):
        if self.error is not None:
            raise self.error
        return [method]


class SendingUpstream(Upstream):
    """With the link's fast lane: ``send`` answers at once (a test needs no frame)."""

    def send(self, method, args, answered):
        if self.error is not None:
            answered(None, self.error)
        else:
            answered([method], None)
        return True


def test_calls_sent_by_the_fast_lane_are_counted_as_calls_are():
    metrics = NodeMetrics()
    heard = []
    counted = metrics.upstream(SendingUpstream())
    assert counted.send("NodeAccess", [1], lambda ok, err: heard.append((ok, err)))
    refused = metrics.upstream(SendingUpstream(DrcError(Code.ECONNREFUSED)))
    assert refused.send("NodeAccess", [1], lambda ok, err: heard.append((ok, err)))
    assert not metrics.upstream(Upstream()).send("NodeAccess", [1], heard.append)  # no lane
    assert heard[0] == (["NodeAccess"], None) and heard[1][1].code is Code.ECONNREFUSED
    assert len(heard) == 2 and metrics.reachable == 0
    samples = scrape(metrics.registry)
    assert samples["drcc_forwarded_calls_total[('outcome', 'ok'), ('verb', 'NodeAccess')]"] == 1
    key = "drcc_forwarded_calls_total[('outcome', 'ECONNREFUSED'), ('verb', 'NodeAccess')]"
    assert samples[key] == 1


def test_forwarded_calls_are_counted_and_tell_whether_drcs_answers():
    metrics = NodeMetrics()

    async def calls() -> None:
        assert await metrics.upstream(Upstream()).call("NodeAccess", [1]) == ["NodeAccess"]
        assert metrics.reachable == 1
        with pytest.raises(DrcError):
            await metrics.upstream(Upstream(DrcError(Code.ECONNREFUSED))).call("NodeAccess")
        assert metrics.reachable == 0
        with pytest.raises(DrcError):  # DRCS answered, with a refusal: it is reachable
            await metrics.upstream(Upstream(DrcError(Code.EPERM))).call("NodeGrant")
        assert metrics.reachable == 1

    asyncio.run(calls())
    samples = scrape(metrics.registry)
    assert samples["drcc_forwarded_calls_total[('outcome', 'ok'), ('verb', 'NodeAccess')]"] == 1
    key = "drcc_forwarded_calls_total[('outcome', 'ECONNREFUSED'), ('verb', 'NodeAccess')]"
    assert samples[key] == 1
    assert samples["drcc_drcs_reachable[]"] == 1
