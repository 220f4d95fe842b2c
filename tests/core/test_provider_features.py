"""Optional provider features are declared, never probed: the service checks a provider's
``features`` once, when it is built, and a misspelt or undeclared member fails there."""

from __future__ import annotations

import pytest

from drc.core.errors import Code, DrcError
from drc.core.model import Credential, Resources
from drc.core.ports import ExternalObjects, NodeObjects, StoreBound, Transaction, provider_features
from drc.core.service import CredentialService
from drc.providers.alps import AlpsProvider
from drc.providers.pool import PoolProvider
from drc.providers.slingshot import SlingshotProvider

from helpers import ALICE, in_job

RANGE = {"cookie_min": 100, "cookie_max": 199}


class Externally(PoolProvider):
    """Cookies of the pool, plus a (pretend) object outside the store per credential."""

    features = (ExternalObjects,)
    cleanup_retry_interval = 5.0

    def release_external(self, resources: Resources) -> None:
        pass

    def describe_external(self, resources: Resources) -> str:
        return f"object {resources.cookie1}"


class Misspelt(PoolProvider):
    features = (ExternalObjects,)
    cleanup_retry_interval = 5.0

    def release_externl(self, resources: Resources) -> None:  # the typo probing hid
        pass

    def describe_external(self, resources: Resources) -> str:
        return ""


class Undeclared(PoolProvider):
    """Has the feature's members but forgot to say so: probing took it, a declaration not."""

    cleanup_retry_interval = 5.0

    def release_external(self, resources: Resources) -> None:
        pass

    def describe_external(self, resources: Resources) -> str:
        return ""


class NodeLedger(PoolProvider):
    """Remembers which nodes will build objects for which credential, in memory."""

    features = (NodeObjects,)
    owed: dict[str, list[int]]

    def node_reference(self, tx: Transaction, cred: Credential, node: str) -> None:
        self.owed.setdefault(node, []).append(cred.id)

    def node_state(self, tx: Transaction, node: str):
        return [(c, c + 1) for c in self.owed.get(node, [])], []

    def node_cleaned(self, tx: Transaction, node: str, credentials: list[int], now: float):
        return [c for c in credentials if c in self.owed.get(node, [])]


def test_each_provider_declares_what_it_offers():
    assert provider_features(PoolProvider(**RANGE)) == frozenset()
    assert provider_features(AlpsProvider()) == {ExternalObjects}
    assert provider_features(SlingshotProvider()) == {ExternalObjects, StoreBound, NodeObjects}


def test_the_service_uses_exactly_the_declared_features(store):
    pool = CredentialService(store, PoolProvider(**RANGE))
    assert not pool.cleanup.enabled and pool.node_objects is None
    external = CredentialService(store, Externally(**RANGE))
    assert external.cleanup.enabled and external.cleanup.retry_interval == 5.0
    assert external.cleanup.name(Resources("pool", 123)) == "object 123"


def test_a_misspelt_member_fails_at_construction_naming_it(store):
    with pytest.raises(
        TypeError, match="'pool' declares ExternalObjects but has no release_external"
    ):
        CredentialService(store, Misspelt(**RANGE))


def test_a_feature_member_without_its_declaration_fails(store):
    with pytest.raises(
        TypeError,
        match="has cleanup_retry_interval, describe_external, release_external of "
        "ExternalObjects but does not declare ExternalObjects",
    ):
        CredentialService(store, Undeclared(**RANGE))


def test_a_declaration_that_is_not_a_feature_fails(store):
    class Stringly(PoolProvider):
        features = ("ExternalObjects",)  # a name, not the Protocol

    with pytest.raises(TypeError, match=r"declares \['ExternalObjects'\], not features \(known: "):
        CredentialService(store, Stringly(**RANGE))

    class Bare:
        name = "bare"

    with pytest.raises(TypeError, match="'bare': class attribute 'features' must be a tuple"):
        provider_features(Bare())  # type: ignore[arg-type]


def test_a_declared_method_that_is_not_callable_fails():
    class Half(NodeLedger):
        node_cleaned = None  # type: ignore[assignment]

    with pytest.raises(TypeError, match=r"NodeObjects member\(s\) node_cleaned not callable"):
        provider_features(Half(**RANGE))


def test_node_objects_hooks_are_called_for_accesses_on_a_node(store):
    provider = NodeLedger(**RANGE)
    object.__setattr__(provider, "owed", {})  # a frozen dataclass
    service = CredentialService(store, provider)
    cred = service.acquire(in_job(ALICE, 5, node="n7"), 0)
    service.access(in_job(ALICE, 5, node="n7"), cred.id)
    assert provider.owed == {"n7": [cred.id]}
    assert service.node_objects_state("n7") == ([(cred.id, cred.id + 1)], [])
    assert service.node_objects_removed("n7", [cred.id, 999]) == [cred.id]


def test_without_node_objects_nodes_owe_nothing_but_input_is_still_checked(service):
    assert service.node_objects_state("n1") == ([], [])
    assert service.node_objects_removed("n1", [1]) == []
    with pytest.raises(DrcError) as info:
        service.node_objects_removed("n1", [-1])
    assert info.value.code is Code.EINVAL
