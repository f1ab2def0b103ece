"""Fixtures for the integration suite: repositories on the real test servers.

Every test gets a bucket, a database and an index of its own, removed when it
ends. The suite fails, never skips, when a server is not configured: start
them with ``make services`` and run the tests with ``. ./.services.env``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import servers
from servers import RemoteUris


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: needs the real test servers ('make services')",
    )


@pytest.fixture
def remote() -> Iterator[RemoteUris]:
    """Objects in GCS, refs in MongoDB, metrics in OpenSearch."""
    yield from servers.remote_uris("os")


@pytest.fixture(params=["os", "es"])
def remote_any_search(request: pytest.FixtureRequest) -> Iterator[RemoteUris]:
    """Objects in GCS, refs in MongoDB, metrics in OpenSearch or Elasticsearch."""
    yield from servers.remote_uris(str(request.param))
