"""The real test servers: where they are, and fresh namespaces on them.

``scripts/services.sh up`` (``make services``) starts FerretDB, fake-gcs-server,
OpenSearch and Elasticsearch on loopback and writes their addresses to
``.services.env``. Tests read them from the environment and fail, never skip,
when one is missing. Every test gets a database, bucket or index of its own,
named with a random suffix, and removes it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

MONGO_ENV = "MVC_TEST_MONGO_URI"
OPENSEARCH_ENV = "MVC_TEST_OS_URL"
ELASTIC_ENV = "MVC_TEST_ES_URL"
GCS_ENV = "STORAGE_EMULATOR_HOST"

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def require_env(name: str) -> str:
    """Return the environment variable ``name``; fail the test when it is unset."""
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: start the test servers with 'make services'"
            " (scripts/services.sh up) and run the tests with '. ./.services.env'",
            pytrace=False,
        )
    host = urlsplit(value if "://" in value else f"http://{value}").hostname
    if host not in _LOOPBACK:
        pytest.fail(f"{name} must point at a loopback server, got {host}")
    return value


def unique(prefix: str) -> str:
    """Return ``prefix`` with a random suffix, for a namespace of one test."""
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def mongo_uri(database: str) -> str:
    """Return the test MongoDB URI naming ``database``, options kept."""
    parts = urlsplit(require_env(MONGO_ENV))
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def drop_mongo_database(database: str) -> None:
    """Drop a test database."""
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
        require_env(MONGO_ENV), serverSelectionTimeoutMS=5000
    )
    try:
        client.drop_database(database)
    finally:
        client.close()


def gcs_client() -> Any:
    """Return a GCS client for the emulator (never the cloud endpoint)."""
    require_env(GCS_ENV)
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project="test", credentials=AnonymousCredentials())
    endpoint = urlsplit(str(client._connection.API_BASE_URL)).hostname
    assert endpoint in _LOOPBACK, endpoint
    return client


def create_bucket(name: str) -> None:
    """Create a bucket on the emulator."""
    gcs_client().create_bucket(name)


def delete_bucket(name: str) -> None:
    """Delete a bucket and everything in it from the emulator."""
    client = gcs_client()
    bucket = client.bucket(name)
    for blob in client.list_blobs(bucket):
        blob.delete()
    bucket.delete()


def search_url(kind: str) -> str:
    """Return the base URL of the OpenSearch (``os``) or Elasticsearch (``es``)."""
    return require_env(OPENSEARCH_ENV if kind == "os" else ELASTIC_ENV)


def search_client(kind: str) -> Any:
    """Return a raw client for ``os`` or ``es``, for setup and cleanup."""
    if kind == "os":
        from opensearchpy import OpenSearch

        return OpenSearch(hosts=[search_url("os")])
    from elasticsearch import Elasticsearch

    return Elasticsearch(search_url("es"))


def delete_index(kind: str, index: str) -> None:
    """Delete a test index if it exists."""
    client = search_client(kind)
    try:
        if kind == "os":
            client.indices.delete(index=index, ignore=[404])
        else:
            client.options(ignore_status=404).indices.delete(index=index)
    finally:
        client.close()


def set_index_limits(kind: str, index: str, *, terms: int, window: int) -> None:
    """Lower an index's ``max_terms_count`` and ``max_result_window``."""
    client = search_client(kind)
    body = {"index": {"max_terms_count": terms, "max_result_window": window}}
    try:
        client.indices.put_settings(index=index, body=body)
    finally:
        client.close()


def ferretdb_binary() -> Path:
    """Return the FerretDB binary the services script built; fail when absent."""
    cache = Path(
        os.environ.get("MVC_SERVICES_CACHE", Path.home() / ".cache/mvcstore-services")
    )
    found = sorted((cache / "bin").glob("ferretdb-*"))
    if not found:
        pytest.fail(
            f"no FerretDB binary in {cache / 'bin'}: build it with 'make services'",
            pytrace=False,
        )
    return found[-1]


def open_ref_store(kind: str, location: str) -> tuple[Any, Any, Any]:
    """Open (ref store, epoch index, closer) at a SQLite path or MongoDB URI."""
    if kind == "sqlite":
        from mvcstore.stores.local import (
            SqliteDatabase,
            SqliteEpochIndex,
            SqliteRefStore,
        )

        db = SqliteDatabase(Path(location), durable=False, create=True)
        return SqliteRefStore(db), SqliteEpochIndex(db), db
    from mvcstore.stores.mongo import MongoDatabase, MongoEpochIndex, MongoRefStore

    database = MongoDatabase(location)
    return MongoRefStore(database), MongoEpochIndex(database), database


@dataclass(frozen=True)
class RemoteUris:
    """The backend URIs of one test's repository, and their namespaces."""

    bucket: str
    database: str
    index: str
    search: str

    @property
    def objects(self) -> str:
        return f"gs://{self.bucket}/repo/objects"

    @property
    def refs(self) -> str:
        return mongo_uri(self.database)

    @property
    def metrics(self) -> str:
        return f"{self.search}+{search_url(self.search)}/{self.index}"


def remote_uris(search: str) -> Iterator[RemoteUris]:
    """Create a bucket, name a database and an index; remove all three after."""
    uris = RemoteUris(
        bucket=unique("mvc-it-"),
        database=unique("mvc_it_"),
        index=unique(f"mvc-it-{search}-"),
        search=search,
    )
    require_env(MONGO_ENV)
    search_url(search)
    create_bucket(uris.bucket)
    try:
        yield uris
    finally:
        delete_bucket(uris.bucket)
        drop_mongo_database(uris.database)
        delete_index(search, uris.index)
