"""NodeCache alone: what a node may answer without DRCS, and when it must stop.

No daemon, no bus, no root: the cache is a plain object keyed by (credential, holder).
"""

from __future__ import annotations

import pytest

from drc.core.model import FREED, AccessInfo, Holder
from drc.node.cache import Entry, NodeCache

NODE = "n1"
JOB_A, JOB_B = Holder.for_job(NODE, 10), Holder.for_job(NODE, 11)
PROC = Holder.for_process(NODE, 4242, 777)
PROC_REUSED = Holder.for_process(NODE, 4242, 999)  # same pid, another process


def entry(credential: int, epoch: int = 0, flags: int = 0) -> Entry:
    return Entry(AccessInfo(credential, 1000 + credential, 0, 7), flags, epoch)


@pytest.fixture
def cache() -> NodeCache:
    return NodeCache()


def test_an_association_is_keyed_by_credential_and_holder(cache: NodeCache):
    cache.put(1, JOB_A, entry(1))
    assert cache.get(1, JOB_A) == entry(1)
    assert cache.get(1, JOB_B) is None  # another job on the node is another association
    assert cache.get(2, JOB_A) is None  # another credential of the same job
    assert list(cache.entries) == [(1, JOB_A)]
    # Holders are values: an equal holder built again finds the same entry.
    assert cache.get(1, Holder.for_job(NODE, 10)) == entry(1)


def test_a_process_holder_includes_its_start_time(cache: NodeCache):
    """A reused pid is another process: it must not inherit the old one's association."""
    cache.put(1, PROC, entry(1))
    assert cache.get(1, PROC_REUSED) is None
    cache.drop_process(4242, 999)
    assert cache.get(1, PROC) == entry(1)
    cache.drop_process(4242, 777)
    assert cache.get(1, PROC) is None


def test_a_release_drops_only_that_association(cache: NodeCache):
    cache.put(1, JOB_A, entry(1))
    cache.put(1, JOB_B, entry(1))
    cache.drop(1, JOB_A)
    cache.drop(1, JOB_A)  # twice is harmless
    assert cache.get(1, JOB_A) is None
    assert cache.get(1, JOB_B) == entry(1)


def test_a_job_end_evicts_every_credential_of_that_job_and_nothing_else(cache: NodeCache):
    for credential in (1, 2, 3):
        cache.put(credential, JOB_A, entry(credential))
    cache.put(1, JOB_B, entry(1))
    cache.put(1, PROC, entry(1))
    cache.drop_job(10)
    assert sorted(cache.entries) == sorted([(1, JOB_B), (1, PROC)])


def test_drop_where_reports_what_it_evicted(cache: NodeCache):
    cache.put(1, JOB_A, entry(1))
    cache.put(2, JOB_A, entry(2))
    gone = cache.drop_where(lambda credential, _holder: credential != 2)
    assert gone == [(2, JOB_A)]
    assert list(cache.entries) == [(1, JOB_A)]


def test_a_revocation_raises_the_epoch_but_keeps_associations(cache: NodeCache):
    """A revoke blocks new access only: holders keep theirs; tokens below the epoch fail."""
    cache.put(1, JOB_A, entry(1, epoch=0))
    cache.learn_epoch(1, 3)
    assert cache.get(1, JOB_A) == entry(1, epoch=0)
    assert not cache.token_epoch_current(1, 2)
    assert cache.token_epoch_current(1, 3)
    assert cache.token_epoch_current(1, 4)


def test_epochs_never_go_back(cache: NodeCache):
    cache.learn_epoch(1, 5)
    cache.learn_epoch(1, 2)  # a late, older announcement
    cache.put(1, JOB_A, entry(1, epoch=1))  # an answer that travelled longer
    assert cache.epochs[1] == 5
    assert not cache.token_epoch_current(1, 4)


def test_an_answer_raises_the_known_epoch(cache: NodeCache):
    cache.put(1, JOB_A, entry(1, epoch=4))
    assert cache.epochs[1] == 4
    assert not cache.token_epoch_current(1, 3)
    assert not cache.token_epoch_current(2, 0)  # unknown credential: never current


def test_a_freed_credential_is_evicted_and_never_cached_again(cache: NodeCache):
    cache.put(1, JOB_A, entry(1))
    cache.put(1, JOB_B, entry(1))
    cache.put(2, JOB_A, entry(2))
    cache.learn_epoch(1, FREED)
    assert sorted(cache.entries) == [(2, JOB_A)]
    # An answer sent before the free arrives after it: not cached.
    cache.put(1, JOB_A, entry(1, epoch=9))
    assert cache.get(1, JOB_A) is None
    assert not cache.token_epoch_current(1, 9)


def test_other_tenant_names_another_holder_of_the_credential_on_the_node(cache: NodeCache):
    assert cache.other_tenant(1, JOB_A) is None
    cache.put(1, JOB_A, entry(1))
    assert cache.other_tenant(1, JOB_A) is None  # itself is no other tenant
    assert cache.other_tenant(1, JOB_B) == JOB_A
    assert cache.other_tenant(2, JOB_B) is None  # another credential


def test_known_credentials_are_cached_or_announced_but_not_freed(cache: NodeCache):
    cache.put(1, JOB_A, entry(1))
    cache.learn_epoch(2, 1)  # revoked, no association here
    cache.put(3, JOB_A, entry(3))
    cache.learn_epoch(3, FREED)
    assert cache.known_credentials() == {1, 2}


def test_a_jobs_lowest_credential_is_of_that_holder_only(cache: NodeCache):
    """JobCredential answered from the cache: the job's lowest id here, none of another's."""
    assert cache.lowest_credential(JOB_A) == 0
    cache.put(5, JOB_A, entry(5))
    cache.put(3, JOB_A, entry(3))
    cache.put(1, JOB_B, entry(1))
    assert cache.lowest_credential(JOB_A) == 3
    cache.drop(3, JOB_A)
    assert cache.lowest_credential(JOB_A) == 5
    cache.drop_job(10)
    assert cache.lowest_credential(JOB_A) == 0
    assert cache.lowest_credential(JOB_B) == 1


def test_every_way_out_leaves_no_trace_of_the_association(cache: NodeCache):
    """The indexes follow the associations: a holder or credential that is gone by any path
    (release, job end, process exit, free, a sweep) is neither another tenant nor known."""
    cache.put(1, JOB_A, entry(1))
    cache.put(1, PROC, entry(1))
    cache.drop_process(4242, 777)
    assert cache.other_tenant(1, JOB_B) == JOB_A
    cache.drop(1, JOB_A)
    assert cache.other_tenant(1, JOB_B) is None
    assert cache.lowest_credential(PROC) == 0
    cache.put(2, JOB_B, entry(2))
    cache.drop_where(lambda _credential, holder: holder != JOB_B)
    assert cache.entries == {}
    assert cache.other_tenant(2, JOB_A) is None
    assert cache.lowest_credential(JOB_B) == 0
    cache.put(4, JOB_A, entry(4))
    cache.put(4, JOB_B, entry(4))
    cache.learn_epoch(4, FREED)
    assert cache.other_tenant(4, PROC) is None
    assert cache.lowest_credential(JOB_A) == cache.lowest_credential(JOB_B) == 0
    assert cache.known_credentials() == {1, 2}  # epochs learnt, none freed


def test_the_first_tenant_stays_the_one_named_while_it_holds(cache: NodeCache):
    cache.put(1, JOB_A, entry(1))
    cache.put(1, JOB_B, entry(1))
    assert cache.other_tenant(1, PROC) == JOB_A
    cache.drop(1, JOB_A)
    assert cache.other_tenant(1, PROC) == JOB_B
