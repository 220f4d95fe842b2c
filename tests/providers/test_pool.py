"""The cookie pool: ranges, strides, one or two cookies, never a cookie held twice."""

from __future__ import annotations

import pytest

from drc.core.errors import Code, DrcError
from drc.core.service import CredentialService
from drc.providers import make_provider
from drc.providers.pool import PoolProvider

from helpers import ALICE, direct


def test_two_cookie_mode_hands_consecutive_cookies_by_stride(store):
    pool = PoolProvider(cookie_min=100, cookie_max=119, cookie_stride=2, cookies_per_credential=2)
    svc = CredentialService(store, pool)
    creds = [svc.acquire(direct(ALICE), 0).resources for _ in range(pool.capacity)]
    assert pool.capacity == 5
    assert [(r.cookie1, r.cookie2) for r in creds] == [
        (100, 102),
        (104, 106),
        (108, 110),
        (112, 114),
        (116, 118),
    ]
    with pytest.raises(DrcError) as err:
        svc.acquire(direct(ALICE), 0)
    assert err.value.code is Code.ENOSPC


def test_no_cookie_is_ever_held_twice_across_churn(store):
    pool = PoolProvider(cookie_min=1, cookie_max=16)
    svc = CredentialService(store, pool)
    live: dict[int, int] = {}
    for round_ in range(6):
        while len(live) < pool.capacity:
            c = svc.acquire(direct(ALICE), 0)
            assert c.resources.cookie1 not in live.values()
            live[c.id] = c.resources.cookie1
        for cred in sorted(live)[round_ % 3 :: 3]:
            svc.release(direct(ALICE), cred)
            del live[cred]


@pytest.mark.parametrize(
    "settings",
    [
        {"cookie_min": 0, "cookie_max": 5},
        {"cookie_min": 5, "cookie_max": 4},
        {"cookie_min": 1, "cookie_max": 5, "cookies_per_credential": 3},
        {"cookie_min": 1, "cookie_max": 5, "ptag": 256},
        {"cookie_min": 1, "cookie_max": 5, "cookie_stride": 0},
    ],
)
def test_bad_pool_settings_are_refused_at_start(settings):
    with pytest.raises(ValueError, match="pool"):
        make_provider("pool", settings)


def test_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="unknown provider"):
        make_provider("magic", {})
