"""Shared fixtures: a real SQLite store and the core service over it."""

from __future__ import annotations

from pathlib import Path

import pytest

from drc.core.policy import Policy
from drc.core.service import CredentialService
from drc.providers.pool import PoolProvider
from drc.store.sql import PeeweeStore

from helpers import ALICE


@pytest.fixture
def store(tmp_path: Path) -> PeeweeStore:
    s = PeeweeStore.from_url(f"sqlite:///{tmp_path}/drcs.db")
    yield s
    s.close()


@pytest.fixture
def pool() -> PoolProvider:
    return PoolProvider(cookie_min=1000, cookie_max=1099, ptag=7)


@pytest.fixture
def service(store: PeeweeStore, pool: PoolProvider) -> CredentialService:
    return CredentialService(store, pool, Policy(persistent_uids=frozenset({ALICE})))
