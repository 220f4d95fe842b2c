"""drc-jedi tests run against the embedded DRCS of the integration tests."""

from integration.conftest import cluster, runtime, users  # noqa: F401 - the shared fixtures
