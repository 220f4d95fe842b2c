"""The fair default behind the flood test: drc.conf's user_limit, how it combines with stored
limits, whom it binds, and the rate of the limit-reached audit (the core, a real SQLite store)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from drc import config
from drc.core.errors import Code, DrcError
from drc.core.limits import LimitHits
from drc.core.model import LimitScope
from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.providers.pool import PoolProvider
from drc.store.sql import PeeweeStore

from helpers import ALICE, BOB, CAROL, ROOT, direct, in_job


def user_limit(tmp_path: Path, value: str, capacity: int = 1024) -> int | None:
    path = tmp_path / "drc.conf"
    path.write_text(f"[server]\nuser_limit = {value}\n")
    return config.load(path).user_limit(capacity)


def test_the_default_is_a_tenth_of_the_pool_and_says_so_in_its_units(tmp_path: Path) -> None:
    assert config.defaults()["server"]["user_limit"] == "10%"
    assert config.load(tmp_path / "absent", must_exist=False).user_limit(65536) == 6553
    assert user_limit(tmp_path, '"25%"', 1024) == 256
    assert user_limit(tmp_path, '"10%"', 3) == 1  # never 0: that would refuse everyone
    assert user_limit(tmp_path, "40") == 40
    assert user_limit(tmp_path, '"none"') is None


@pytest.mark.parametrize("value", ["0", '"0%"', '"150%"', '"ten"', '"%"', '"nan%"', "-3"])
def test_a_bad_user_limit_is_refused_naming_the_key(tmp_path: Path, value: str) -> None:
    with pytest.raises(config.ConfigError, match=r"\[server\] user_limit: must be"):
        user_limit(tmp_path, value)


@pytest.fixture
def fair(tmp_path: Path):
    store = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db")
    yield CredentialService(store, PoolProvider(cookie_min=1, cookie_max=100), Policy(user_limit=2))
    store.close()


def test_the_configured_default_binds_users_not_root(fair: CredentialService) -> None:
    for _ in range(2):
        fair.acquire(direct(CAROL), 0)
    with pytest.raises(DrcError) as refused:
        fair.acquire(in_job(CAROL, 7), 0)  # in a job or not: the user's count
    assert refused.value.code is Code.ENOSPC and refused.value.limit_scope == "user-default"
    assert "drc.conf [server] user_limit" in refused.value.message
    fair.acquire(direct(BOB), 0)  # others keep their share
    for _ in range(5):
        fair.acquire(ROOT, 0)  # root is trusted with the pool
    assert "user-default: 2 (drc.conf user_limit; not root)" in fair.describe()["limits"]


def test_a_stored_user_default_replaces_the_configured_one(fair: CredentialService) -> None:
    fair.set_limit(ROOT, LimitScope.USER_DEFAULT, 0, 3)
    for _ in range(3):
        fair.acquire(direct(ALICE), 0)
    with pytest.raises(DrcError) as refused:
        fair.acquire(direct(ALICE), 0)
    assert "user-default limit of 3" in refused.value.message
    assert "drc.conf" not in refused.value.message
    assert all("drc.conf" not in line for line in fair.describe()["limits"])
    fair.set_limit(ROOT, LimitScope.USER_DEFAULT, 0, None)  # cleared: the drc.conf default again
    with pytest.raises(DrcError, match=r"drc\.conf"):
        fair.acquire(direct(ALICE), 0)


def test_reaching_a_limit_is_audited_once_a_minute_per_user(caplog) -> None:
    now = [1000.0]
    hits = LimitHits(lambda: now[0])
    error = DrcError(Code.ENOSPC, "user-default limit of 2 live credential(s) reached")
    error.limit_scope = "user-default"
    with caplog.at_level(logging.INFO, logger="drc.audit"):
        written = [hits.record(direct(CAROL), error) for _ in range(100)]
        written.append(hits.record(direct(BOB), error))  # another user: a line of its own
        now[0] += 61
        written.append(hits.record(direct(CAROL), error))
    assert written == [True] + [False] * 99 + [True, True]
    lines = [r.getMessage() for r in caplog.records if "limit-reached" in r.getMessage()]
    assert len(lines) == 3
    assert f"uid={CAROL}" in lines[0] and "refused_before=0" in lines[0]
    assert f"uid={CAROL}" in lines[2] and "refused_before=99" in lines[2]
