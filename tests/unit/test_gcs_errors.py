"""The GCS object store's error paths, on a fake client (no server)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from google.api_core import exceptions as api_exceptions

from mvcstore.codec import frame, hash_object
from mvcstore.errors import BackendUnavailableError, ObjectNotFoundError
from mvcstore.stores import gcs


class FakeBlob:
    def __init__(self, bucket: FakeBucket, name: str) -> None:
        self.bucket = bucket
        self.name = name

    def _next(self, call: str) -> Any:
        self.bucket.calls.append(call)
        script = self.bucket.script.get(call, [])
        outcome = script.pop(0) if script else None
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def upload_from_string(self, data: bytes, **kwargs: Any) -> None:
        assert kwargs["if_generation_match"] == 0
        self._next("upload")
        self.bucket.stored[self.name] = data

    def exists(self, **kwargs: Any) -> bool:
        outcome = self._next("exists")
        return bool(outcome) if outcome is not None else self.name in self.bucket.stored

    def download_as_bytes(self, **kwargs: Any) -> bytes:
        self._next("download")
        if self.name not in self.bucket.stored:
            raise api_exceptions.NotFound("no such object")
        return self.bucket.stored[self.name]


class FakeBucket:
    name = "bucket"

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.script: dict[str, list[Any]] = {}
        self.calls: list[str] = []

    def blob(self, name: str) -> FakeBlob:
        return FakeBlob(self, name)


class FakeClient:
    def __init__(self) -> None:
        self.the_bucket = FakeBucket()

    def bucket(self, name: str) -> FakeBucket:
        return self.the_bucket


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> gcs.GcsObjectStore:
    monkeypatch.setattr(gcs.time, "sleep", lambda seconds: None)
    return gcs.GcsObjectStore("bucket", "objects", client=FakeClient(), max_attempts=4)


def _script(store: gcs.GcsObjectStore, call: str, *outcomes: Any) -> list[str]:
    bucket: FakeBucket = store.bucket
    bucket.script[call] = list(outcomes)
    return bucket.calls


def _blob() -> tuple[Any, bytes]:
    return hash_object("blob", b"w"), frame("blob", b"w", level=0)


def test_rate_limits_and_server_errors_are_retried(store: gcs.GcsObjectStore) -> None:
    oid, framed = _blob()
    calls = _script(
        store,
        "upload",
        api_exceptions.TooManyRequests("slow down"),
        api_exceptions.ServiceUnavailable("try later"),
    )

    assert store.put_if_absent(oid, framed) is True

    assert calls == ["upload"] * 3
    assert store.get_framed(oid) == framed


def test_a_server_that_keeps_failing_is_unavailable(store: gcs.GcsObjectStore) -> None:
    oid, framed = _blob()
    _script(store, "upload", *[api_exceptions.InternalServerError("boom")] * 10)

    with pytest.raises(BackendUnavailableError) as caught:
        store.put_if_absent(oid, framed)

    assert caught.value.uri == "gs://bucket/objects"
    assert "after 4 attempts" in str(caught.value)


def test_a_precondition_failure_of_a_stored_object_is_success(
    store: gcs.GcsObjectStore,
) -> None:
    oid, framed = _blob()
    calls = _script(store, "upload", api_exceptions.PreconditionFailed("exists"))
    _script(store, "exists", True)

    assert store.put_if_absent(oid, framed) is False
    assert calls == ["upload", "exists"]


def test_a_precondition_failure_without_an_object_is_an_error(
    store: gcs.GcsObjectStore,
) -> None:
    oid, framed = _blob()
    _script(store, "upload", api_exceptions.PreconditionFailed("exists"))
    _script(store, "exists", False)

    with pytest.raises(BackendUnavailableError, match="cannot be found"):
        store.put_if_absent(oid, framed)


def test_a_refusal_is_not_retried(store: gcs.GcsObjectStore) -> None:
    oid, framed = _blob()
    calls = _script(store, "upload", api_exceptions.Forbidden("no access"))

    with pytest.raises(BackendUnavailableError, match="no access"):
        store.put_if_absent(oid, framed)

    assert calls == ["upload"]


def test_a_missing_object_is_not_found(store: gcs.GcsObjectStore) -> None:
    oid, _ = _blob()

    with pytest.raises(ObjectNotFoundError) as caught:
        store.get_framed(oid)

    assert caught.value.location == f"gs://bucket/objects/{oid.hex[:2]}/{oid.hex[2:]}"


def test_names_outside_the_layout_are_not_ids(store: gcs.GcsObjectStore) -> None:
    oid, _ = _blob()
    parse: Callable[[str], Any] = store._parse_name

    assert parse(f"objects/{oid.hex[:2]}/{oid.hex[2:]}") == oid
    assert parse("objects/readme.txt") is None
    assert parse(f"objects/{oid.hex[:3]}/{oid.hex[3:]}") is None
