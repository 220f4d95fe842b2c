"""Scrapes of a running embedded cluster: the numbers move with real traffic, and a scrape
costs DRCS no store query."""

from __future__ import annotations

import time

from cluster import Cluster
from scrapes import eventually, value

ACQUIRE_FOR_JOB_202 = "cred = client.acquire(client.FLEX)\nclient.grant(cred, wlm=202)\nprint(cred)"
ACCESS = "print(client.access({cred}).cookie1)"

#: Every label a drc metric may carry: all bounded (no credential id, uid or job).
BOUNDED_LABELS = {"transport", "verb", "outcome", "state", "provider", "resource", "scope", "kind"}


def test_an_acquire_raises_the_live_count_and_is_counted_per_verb(metered: Cluster):
    before = metered.scrape("drcs")
    assert value(before, "drcs_credentials_live") == 0
    assert value(before, "drcs_pool_size", provider="pool", resource="cookies") == 1024

    r = metered.drccli("alice", "acquire", "--flex")
    assert r.returncode == 0, r.stderr

    def live() -> float:
        return value(metered.scrape("drcs"), "drcs_credentials_live")

    assert eventually(live, 1) == 1
    after = metered.scrape("drcs")
    assert value(after, "drcs_credentials", state="ACTIVE") == 1
    assert value(after, "drcs_references") == 1
    assert value(after, "drcs_pool_used", provider="pool", resource="cookies") == 1
    assert value(after, "drcs_pool_free", provider="pool", resource="cookies") == 1023
    ok = {"transport": "dbus", "verb": "Acquire"}
    assert value(after, "drcs_requests_total", outcome="ok", **ok) == 1
    assert value(after, "drcs_request_duration_seconds_count", **ok) == 1
    assert value(after, "drcs_store_transaction_seconds_count", kind="write") >= 1
    assert "drcs_gc_full_seconds_count" in after  # DRCS's collection pauses are exported
    # DRCC follows the change feed over the link (between two long polls: briefly not)
    assert eventually(lambda: value(metered.scrape("drcs"), "drcs_nodes_following"), 1) == 1
    assert value(after, "drcs_link_connections") >= 1


def test_a_cached_access_raises_hits_not_forwarded_calls(metered: Cluster):
    r = metered.in_job(101, "alice", ACQUIRE_FOR_JOB_202)
    assert r.returncode == 0, r.stderr
    cred = int(r.stdout.split()[-1])
    node0 = metered.scrape("drcc")
    assert value(node0, "drcc_forwarded_calls_total", verb="NodeAcquire", outcome="ok") == 1

    first = metered.in_job(202, "bob", ACCESS.format(cred=cred))  # a miss: DRCS is asked
    assert first.returncode == 0, first.stderr
    node1 = metered.scrape("drcc")
    forwarded = {"verb": "NodeAccess", "outcome": "ok"}
    assert value(node1, "drcc_forwarded_calls_total", **forwarded) == 1
    assert value(node1, "drcc_cache_misses_total") == value(node0, "drcc_cache_misses_total") + 1
    hits = value(node1, "drcc_cache_hits_total")

    second = metered.in_job(202, "bob", ACCESS.format(cred=cred))  # same job: the cache answers
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    node2 = metered.scrape("drcc")
    assert value(node2, "drcc_cache_hits_total") == hits + 1
    assert value(node2, "drcc_forwarded_calls_total", **forwarded) == 1
    assert value(node2, "drcc_cache_misses_total") == value(node1, "drcc_cache_misses_total")
    assert value(node2, "drcc_requests_total", transport="dbus", verb="Access", outcome="ok") == 2
    assert value(node2, "drcc_drcs_reachable") == 1
    assert value(node2, "drcc_cache_associations") == 2  # jobs 101 and 202

    for samples in (node2, metered.scrape("drcs")):  # no credential id, uid or job in a label
        assert len(samples) > 10
        for name, children in samples.items():
            for labels in children:
                assert {k for k, _ in labels} - {"le"} <= BOUNDED_LABELS, (name, labels)


def test_limit_refusals_are_counted_by_scope(metered: Cluster):
    assert metered.drccli(None, "limit", "--user-default", "1").returncode == 0
    assert metered.drccli("alice", "acquire").returncode == 0
    refused = metered.drccli("alice", "acquire")
    assert refused.returncode == 1 and "DRC_ENOSPC" in refused.stderr
    samples = metered.scrape("drcs")
    assert value(samples, "drcs_limit_refusals_total", scope="user-default") == 1
    assert value(samples, "drcs_limit_refusals_total", scope="global") == 0
    assert (
        value(samples, "drcs_requests_total", transport="dbus", verb="Acquire", outcome="ENOSPC")
        == 1
    )


def test_a_scrape_costs_drcs_no_store_query(metered: Cluster):
    assert metered.drccli("alice", "acquire").returncode == 0

    def settled() -> float:  # the refresh after the acquire has run and none is due
        return float(value(metered.scrape("drcs"), "drcs_state_age_seconds") > 2)

    assert eventually(settled, 1.0) == 1.0

    def store_transactions(samples: dict) -> float:
        return sum(
            value(samples, "drcs_store_transaction_seconds_count", kind=k)
            for k in ("read", "write")
        )

    before = store_transactions(metered.scrape("drcs"))
    started = time.monotonic()
    for _ in range(50):
        samples = metered.scrape("drcs")
    assert time.monotonic() - started < 10
    assert store_transactions(samples) == before
    assert value(samples, "drcs_credentials_live") == 1  # still answered, from memory


def test_drcc_reports_drcs_unreachable(metered: Cluster):
    from drc.embedded.processes import terminate

    assert value(metered.scrape("drcc"), "drcc_drcs_reachable") == 1
    terminate(metered.drcs_pid)

    def reachable() -> float:
        return value(metered.scrape("drcc"), "drcc_drcs_reachable")

    assert eventually(reachable, 0) == 0
