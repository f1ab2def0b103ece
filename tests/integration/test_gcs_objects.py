"""The GCS object store on the emulator: layout, listing pages, create-only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import servers

from mvcstore.codec import frame, hash_object
from mvcstore.stores.gcs import GcsObjectStore

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket() -> Iterator[str]:
    name = servers.unique("mvc-gcs-")
    servers.create_bucket(name)
    try:
        yield name
    finally:
        servers.delete_bucket(name)


def _blob(text: str) -> tuple[object, bytes]:
    data = text.encode()
    return hash_object("blob", data), frame("blob", data, level=0)


def test_objects_live_under_the_prefix_and_list_across_pages(bucket: str) -> None:
    store = GcsObjectStore(bucket, "team/repo", page_size=10)
    stored = [_blob(f"object {n}") for n in range(25)]
    for oid, framed in stored:
        store.put_if_absent(oid, framed)
    client = servers.gcs_client()
    client.bucket(bucket).blob("team/repo/README").upload_from_string(b"not an object")
    client.bucket(bucket).blob("elsewhere/ab/cd").upload_from_string(b"outside")

    listed = list(store.iter_ids())

    assert sorted(listed) == sorted(oid for oid, _ in stored)
    oid = stored[0][0]
    name = f"team/repo/{oid.hex[:2]}/{oid.hex[2:]}"
    assert store.describe(oid) == f"gs://{bucket}/{name}"
    assert client.bucket(bucket).blob(name).exists()
    store.close()


def test_a_stored_name_is_never_overwritten(bucket: str) -> None:
    store = GcsObjectStore(bucket, "objects")
    oid, framed = _blob("the first bytes")
    _, other = _blob("other bytes")

    assert store.put_if_absent(oid, framed) is True
    assert store.put_if_absent(oid, other) is False

    assert store.get_framed(oid) == framed
    size, written = store.stat_object(oid)
    assert size == len(framed) and written > 0
    store.close()
