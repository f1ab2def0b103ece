"""Every implementation of each store protocol, for the contract suites.

Each fixture is parametrised over the embedded implementation and the remote
ones. A remote one runs against the real test server (see ``servers``) in a
database, bucket or index of its own, removed when the test ends; its tests
are marked ``integration`` and fail, never skip, when the server is not
configured.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import servers

from mvcstore.metrics.base import MetricsIndex
from mvcstore.stores.base import EpochIndex, ObjectStore, RefStore

HERE = Path(__file__).parent
REMOTE = {"mongo", "mongo-chunked", "gcs", "opensearch", "elastic"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: needs the real test servers ('make services')",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # marked here, not in the params: the marker is registered only once this
    # conftest is loaded, after its module-level code ran
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or HERE not in item.path.parents:
            continue
        if REMOTE & {str(value) for value in callspec.params.values()}:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(
    params=[
        "local",
        "mongo",
        "mongo-chunked",
        "gcs",
    ]
)
def object_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[ObjectStore]:
    """An empty object store of each implementation.

    ``mongo-chunked`` is MongoDB with a 64 KiB inline limit and 256 KiB chunks,
    so that small frames take the chunked path.
    """
    kind = request.param
    if kind == "local":
        from mvcstore.stores.local import LocalObjectStore

        (tmp_path / "objects").mkdir()
        (tmp_path / "tmp").mkdir()
        yield LocalObjectStore(tmp_path / "objects", tmp_path / "tmp", durable=False)
    elif kind.startswith("mongo"):
        from mvcstore.stores.mongo import MongoDatabase, MongoObjectStore

        name = servers.unique("mvc_obj_")
        database = MongoDatabase(servers.mongo_uri(name))
        limits = {"inline_limit": 64 << 10, "chunk_size": 256 << 10}
        try:
            yield MongoObjectStore(
                database, **(limits if kind == "mongo-chunked" else {})
            )
        finally:
            database.drop()
            database.close()
    else:
        from mvcstore.stores.gcs import GcsObjectStore

        bucket = servers.unique("mvc-obj-")
        servers.create_bucket(bucket)
        store = GcsObjectStore(bucket, "repo/objects", retry_deadline_s=10)
        try:
            yield store
        finally:
            store.close()
            servers.delete_bucket(bucket)


@pytest.fixture(params=["sqlite", "mongo"])
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The implementation behind ``ref_store`` and ``epoch_index``."""
    return str(request.param)


@pytest.fixture
def refs_location(backend_kind: str, tmp_path: Path) -> Iterator[str]:
    """Where a ref store lives: a SQLite path or a MongoDB URI (fresh)."""
    if backend_kind == "sqlite":
        yield str(tmp_path / "index.sqlite")
        return
    name = servers.unique("mvc_refs_")
    uri = servers.mongo_uri(name)
    try:
        yield uri
    finally:
        servers.drop_mongo_database(name)


@pytest.fixture
def ref_store(backend_kind: str, refs_location: str) -> Iterator[RefStore]:
    """An empty ref store of each implementation."""
    refs, _, closer = servers.open_ref_store(backend_kind, refs_location)
    try:
        yield refs
    finally:
        closer.close()  # type: ignore[attr-defined]


@pytest.fixture
def epoch_index(backend_kind: str, refs_location: str) -> Iterator[EpochIndex]:
    """An empty epoch index of each implementation."""
    _, index, closer = servers.open_ref_store(backend_kind, refs_location)
    try:
        yield index
    finally:
        closer.close()  # type: ignore[attr-defined]


@pytest.fixture(
    params=[
        "sqlite",
        "opensearch",
        "elastic",
    ]
)
def metrics_index(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[MetricsIndex]:
    """An empty metrics index of each implementation."""
    kind = request.param
    if kind == "sqlite":
        from mvcstore.metrics.sqlite import SqliteMetricsIndex

        local = SqliteMetricsIndex(
            tmp_path / "metrics.sqlite", durable=False, create=True
        )
        try:
            yield local
        finally:
            local.close()
        return
    from mvcstore.metrics.elastic import ElasticMetricsIndex, OpenSearchMetricsIndex

    short = "os" if kind == "opensearch" else "es"
    name = servers.unique(f"mvc-metrics-{short}-")
    cls = OpenSearchMetricsIndex if short == "os" else ElasticMetricsIndex
    index = cls(servers.search_url(short), name)
    try:
        yield index
    finally:
        index.close()
        servers.delete_index(short, name)
