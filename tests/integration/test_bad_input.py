"""Bad input over D-Bus: always a DRC error, never a crash, never a state change."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drc.core.errors import Code, DrcError
from drc.core.model import Flags
from drc.serverclient import ServerProxy

from cluster import Cluster, start_cluster, stop_cluster
from scale import fuzzed, size

U32 = st.integers(0, 2**32 - 1)
MISSING = st.integers(10_000, 2**32 - 1)  # ids no credential has in this test
BAD_ACQUIRE_FLAGS = U32.filter(lambda f: f & ~int(Flags.FLEX_CREDENTIAL | Flags.PERSISTENT))
BAD_TARGET_FLAGS = U32.filter(lambda f: bin(f & 0b11100).count("1") != 1 or f & ~0b11100)
# D-Bus strings cannot carry NUL (the client library refuses to send one): everything else goes
TEXT = (
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=300)
    | st.builds(lambda: "x" * 200_000)
    | st.builds(lambda: "\u2603" * 5000)
)
ANY_ARG = st.one_of(
    st.tuples(st.just("u"), U32),
    st.tuples(st.just("s"), TEXT),
    st.tuples(st.just("t"), st.integers(0, 2**64 - 1)),
    st.tuples(st.just("as"), st.lists(TEXT, max_size=3)),
)
MEMBERS = [
    "Acquire",
    "Grant",
    "Revoke",
    "Access",
    "Release",
    "Show",
    "SetLimit",
    "ClearLimit",
    "ExpireJobs",
    "NodeRebooted",
    "List",
    "Status",
]


@pytest.fixture(scope="module")
def live(runtime) -> Iterator[tuple[Cluster, ServerProxy, int]]:
    if os.geteuid() != 0:
        pytest.skip("runs DRCS as root on a private bus")
    cluster = start_cluster(runtime)
    proxy = cluster.server()
    try:
        yield cluster, proxy, proxy.acquire(0)
    finally:
        proxy.close()
        stop_cluster(cluster)


def call_strategy(existing: int):
    cred = st.just(existing) | MISSING
    return st.one_of(
        st.tuples(st.just("Acquire"), st.just("u"), st.tuples(BAD_ACQUIRE_FLAGS)),
        st.tuples(
            st.sampled_from(["Grant", "Revoke"]),
            st.just("uuu"),
            st.tuples(cred, U32, BAD_TARGET_FLAGS),
        ),
        st.tuples(
            st.sampled_from(["Grant", "Revoke"]),
            st.just("uuu"),
            st.tuples(MISSING, U32, st.sampled_from([4, 8, 16])),
        ),
        st.tuples(st.just("Access"), st.just("uu"), st.tuples(MISSING, U32)),
        st.tuples(
            st.just("Access"),
            st.just("uu"),
            st.tuples(st.just(existing), st.integers(1, 2**32 - 1)),
        ),
        st.tuples(st.sampled_from(["Release", "Show"]), st.just("u"), st.tuples(MISSING)),
        st.tuples(
            st.just("SetLimit"),
            st.just("sut"),
            st.tuples(
                TEXT.filter(
                    lambda s: (
                        s
                        not in (
                            "global",
                            "user-default",
                            "group-default",
                            "job-default",
                            "uid",
                            "gid",
                            "job",
                        )
                    )
                ),
                U32,
                st.integers(0, 2**64 - 1),
            ),
        ),
        st.tuples(
            st.just("NodeRebooted"),
            st.just("s"),
            st.tuples(st.just("") | st.just("n" * 256) | st.just("bad\nname")),
        ),
        # Wrong signatures for every member.
        st.tuples(st.sampled_from(MEMBERS), st.lists(ANY_ARG, min_size=1, max_size=3))
        .map(lambda m: (m[0], "".join(a[0] for a in m[1]), tuple(a[1] for a in m[1])))
        .filter(lambda c: c[1] not in ("u", "uu", "uuu", "sut", "su", "s", "au")),
    )


def snapshot(proxy: ServerProxy):
    return proxy.list(), proxy.limits()


@settings(
    max_examples=size(150, 10_000),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_bad_calls_get_a_drc_error_and_change_nothing(live, data):
    cluster, proxy, existing = live
    member, signature, args = data.draw(call_strategy(existing))
    fuzzed("DRCS D-Bus methods")
    before = snapshot(proxy)
    with pytest.raises(DrcError) as err:
        proxy.call(member, signature, *args)
    expected = (Code.EINVAL, Code.CRED_NOT_FOUND, Code.EFLAGS, Code.EBADTARGET, Code.EPROTO)
    assert err.value.code in expected, err.value
    assert err.value.message  # a message a person can act on
    assert os.waitpid(cluster.drcs_pid, os.WNOHANG) == (0, 0)  # DRCS lives on
    assert snapshot(proxy) == before


def test_error_messages_name_what_was_wrong(live):
    _, proxy, existing = live
    with pytest.raises(DrcError, match="expects signature 'u'"):
        proxy.call("Acquire", "s", "persistent")
    with pytest.raises(DrcError, match="exactly one of TARGET_UID"):
        proxy.grant(existing, 1000, 0)
    with pytest.raises(DrcError, match="credential 99999 not found"):
        proxy.release(99999)


def test_a_string_with_a_nul_byte_is_einval_not_a_lost_connection(live):
    """D-Bus strings cannot carry NUL: the client refuses to send it, and says so."""
    _, proxy, _ = live
    before = snapshot(proxy)
    with pytest.raises(DrcError) as err:
        proxy.call("SetLimit", "sut", "\x00", 0, 0)
    assert err.value.code is Code.EINVAL and "NUL" in err.value.message
    assert snapshot(proxy) == before
    assert proxy.limits() == before[1]  # the connection still works
