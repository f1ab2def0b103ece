"""The ObjectStore contract, for every implementation."""

from __future__ import annotations

import os
import threading

import pytest

from mvcstore.codec import ObjectId, frame, hash_object
from mvcstore.errors import CorruptObjectError, ObjectNotFoundError
from mvcstore.objects import Blob, Graph
from mvcstore.stores.base import ObjectStore, get_object, put_object


def _blob(data: bytes) -> tuple[ObjectId, bytes]:
    return hash_object("blob", data), frame("blob", data, level=0)


def test_an_object_reads_back_bit_for_bit(object_store: ObjectStore) -> None:
    oid, framed = _blob(b"weights" * 100)

    assert object_store.put_if_absent(oid, framed) is True

    assert object_store.get_framed(oid) == framed
    assert get_object(object_store, oid) == Blob(b"weights" * 100)


def test_storing_an_object_again_is_a_success_that_writes_nothing(
    object_store: ObjectStore,
) -> None:
    oid, framed = _blob(b"same")
    object_store.put_if_absent(oid, framed)

    assert object_store.put_if_absent(oid, framed) is False

    assert object_store.get_framed(oid) == framed
    assert list(object_store.iter_ids()) == [oid]


def test_a_missing_object_is_not_found(object_store: ObjectStore) -> None:
    oid, _ = _blob(b"never stored")

    with pytest.raises(ObjectNotFoundError) as caught:
        object_store.get_framed(oid)

    assert caught.value.object_id == oid.hex
    assert oid.hex[2:] in object_store.describe(oid)


def test_has_many_returns_exactly_the_stored_ids(object_store: ObjectStore) -> None:
    stored = [_blob(f"kept {n}".encode()) for n in range(30)]
    absent = [_blob(f"absent {n}".encode())[0] for n in range(1200)]
    for oid, framed in stored:
        object_store.put_if_absent(oid, framed)
    kept = {oid for oid, _ in stored}

    assert object_store.has_many([*absent, *kept, *kept]) == kept
    assert object_store.has_many([stored[0][0]]) == {stored[0][0]}
    assert object_store.has_many([absent[0]]) == set()
    assert object_store.has_many([]) == set()


def test_iter_ids_lists_every_object_once(object_store: ObjectStore) -> None:
    stored = {_blob(f"obj {n}".encode()) for n in range(25)}
    for oid, framed in stored:
        object_store.put_if_absent(oid, framed)

    listed = list(object_store.iter_ids())

    assert sorted(listed) == sorted(oid for oid, _ in stored)


def test_delete_removes_the_object_only(object_store: ObjectStore) -> None:
    (a, fa), (b, fb) = _blob(b"a"), _blob(b"b")
    object_store.put_if_absent(a, fa)
    object_store.put_if_absent(b, fb)

    object_store.delete(a)
    object_store.delete(a)

    assert object_store.has_many([a, b]) == {b}
    with pytest.raises(ObjectNotFoundError):
        object_store.get_framed(a)
    assert object_store.put_if_absent(a, fa) is True


def test_a_large_object_reads_back_bit_for_bit(object_store: ObjectStore) -> None:
    data = os.urandom(3 << 20)
    oid, framed = _blob(data)

    assert object_store.put_if_absent(oid, framed) is True
    assert object_store.put_if_absent(oid, framed) is False

    assert object_store.get_framed(oid) == framed
    assert list(object_store.iter_ids()) == [oid]
    object_store.flush()


def test_typed_objects_round_trip_through_put_object(object_store: ObjectStore) -> None:
    graph = Graph.from_value(
        {"nodes": [{"id": "fc.1", "data": {"shape": [[1, 2], [3]]}}], "meta": {}}
    )

    oid = put_object(object_store, graph)

    assert put_object(object_store, graph) == oid
    assert get_object(object_store, oid) == graph


def test_a_damaged_object_is_reported_by_get_object(object_store: ObjectStore) -> None:
    oid, _ = _blob(b"the real bytes")
    _, wrong = _blob(b"other bytes!!!")
    object_store.put_if_absent(oid, wrong)

    with pytest.raises(CorruptObjectError) as caught:
        get_object(object_store, oid)

    assert caught.value.object_id == oid.hex


def test_concurrent_writers_of_one_object_all_succeed(
    object_store: ObjectStore,
) -> None:
    oid, framed = _blob(os.urandom(200_000))
    results: list[bool] = []
    errors: list[BaseException] = []

    def write() -> None:
        try:
            results.append(object_store.put_if_absent(oid, framed))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert True in results
    assert object_store.get_framed(oid) == framed
