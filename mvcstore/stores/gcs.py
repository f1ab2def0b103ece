"""The GCS backend: objects in a Google Cloud Storage bucket.

``gs://BUCKET/PREFIX`` keeps each object under ``PREFIX/XX/YYYY...`` (the id's
hex split after two digits, as on disk). Writes are create-only: an upload with
``if_generation_match=0`` succeeds only if no object has that name, and a 412
answer means it is already stored (checked before it counts as success).
Requests that fail with 429, a 5xx or a dropped connection are retried with
exponential backoff within a bounded time; every other client error becomes an
mvcstore error here. Refs are not kept in GCS (docs/backends.md says why).

The client is built for the emulator with anonymous credentials when
``STORAGE_EMULATOR_HOST`` is set (the client library's own variable), and with
application default credentials otherwise.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Final, TypeVar

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage  # type: ignore[import-untyped]

from mvcstore.codec import ID_SIZE, ObjectId
from mvcstore.errors import (
    BackendUnavailableError,
    InvalidInputError,
    ObjectNotFoundError,
)
from mvcstore.stores.registry import redact_text

__all__ = ["GcsObjectStore", "RETRYABLE", "EMULATOR_ENV"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

EMULATOR_ENV: Final = "STORAGE_EMULATOR_HOST"

RETRYABLE: Final[tuple[type[BaseException], ...]] = (
    api_exceptions.TooManyRequests,
    api_exceptions.InternalServerError,
    api_exceptions.BadGateway,
    api_exceptions.ServiceUnavailable,
    api_exceptions.GatewayTimeout,
    requests.ConnectionError,
    requests.Timeout,
    auth_exceptions.TransportError,
    ConnectionError,
)
"""Errors worth another try: rate limits, server errors, dropped connections."""

_FAILURES: Final[tuple[type[BaseException], ...]] = (
    api_exceptions.GoogleAPIError,
    requests.RequestException,
    auth_exceptions.GoogleAuthError,
)

_HEX: Final = frozenset("0123456789abcdef")


class GcsObjectStore:
    """Objects in a GCS bucket, written create-only.

    Args:
        bucket: The bucket name.
        prefix: The folder inside the bucket ("" for its root).
        client: A ``google.cloud.storage.Client``; built from the environment
            when None.
        retry_deadline_s: How long one request may keep being retried.
        max_attempts: How many tries one request gets at most.
        workers: Parallel requests for existence checks.
        page_size: Names per page when listing.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: storage.Client | None = None,
        retry_deadline_s: float = 60.0,
        max_attempts: int = 8,
        workers: int = 8,
        page_size: int = 1000,
    ) -> None:
        if not bucket:
            raise InvalidInputError("a GCS object store needs a bucket name")
        self.prefix = prefix.strip("/")
        self.location = f"gs://{bucket}/{self.prefix}".rstrip("/")
        self.retry_deadline_s = retry_deadline_s
        self.max_attempts = max_attempts
        self.client = client if client is not None else _build_client(self.location)
        self.bucket = self.client.bucket(bucket)
        self._list_prefix = f"{self.prefix}/" if self.prefix else ""
        self._workers = workers
        self.page_size = page_size
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _name(self, oid: ObjectId) -> str:
        text = oid.hex
        return f"{self._list_prefix}{text[:2]}/{text[2:]}"

    def describe(self, oid: ObjectId) -> str:
        """Return the object's ``gs://`` address, for messages."""
        return f"gs://{self.bucket.name}/{self._name(oid)}"

    def _call(self, action: str, request: Callable[[], T]) -> T:
        """Run one request, retrying transient failures with backoff.

        ``NotFound`` and ``PreconditionFailed`` reach the caller unchanged;
        every other failure becomes BackendUnavailableError.
        """
        deadline = time.monotonic() + self.retry_deadline_s
        delay = 0.1
        attempt = 0
        while True:
            attempt += 1
            try:
                return request()
            except (api_exceptions.NotFound, api_exceptions.PreconditionFailed):
                raise
            except RETRYABLE as exc:
                pause = delay * (1 + random.random())
                if attempt >= self.max_attempts or time.monotonic() + pause > deadline:
                    raise self._unavailable(action, exc, attempt) from exc
                logger.debug("%s: retry %d after %s", action, attempt, exc)
                time.sleep(pause)
                delay = min(delay * 2, 5.0)
            except _FAILURES as exc:
                raise self._unavailable(action, exc, attempt) from exc

    def _unavailable(
        self, action: str, exc: BaseException, attempts: int
    ) -> BackendUnavailableError:
        text = redact_text(str(exc).strip() or type(exc).__name__)[:300]
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return BackendUnavailableError(self.location, f"{action} failed{tries}: {text}")

    def put_if_absent(self, oid: ObjectId, framed: bytes) -> bool:
        """Upload the frame unless an object of that name exists.

        Returns:
            True if this call stored it; False if it was already stored.

        Raises:
            BackendUnavailableError: If the bucket cannot be written.
        """
        blob = self.bucket.blob(self._name(oid))
        data = bytes(framed)
        try:
            self._call(
                f"store object {oid.hex}",
                lambda: blob.upload_from_string(
                    data,
                    content_type="application/octet-stream",
                    if_generation_match=0,
                    retry=None,
                ),
            )
        except api_exceptions.PreconditionFailed:
            # 412: a generation exists, maybe from our own retried first try;
            # it counts as stored only once it is seen
            if not self._call(
                f"look up object {oid.hex}", lambda: blob.exists(retry=None)
            ):
                raise BackendUnavailableError(
                    self.location,
                    f"object {oid.hex} was refused as existing but cannot be found",
                    hint="retry the commit; run 'mvc fsck' if it happens again",
                ) from None
            return False
        except api_exceptions.NotFound as exc:
            raise self._unavailable(f"store object {oid.hex}", exc, 1) from exc
        logger.debug("put %s (%d bytes)", oid.hex, len(data))
        return True

    def get_framed(self, oid: ObjectId) -> bytes:
        """Download the stored frame of ``oid``.

        Raises:
            ObjectNotFoundError: If no object has that name.
            BackendUnavailableError: If the bucket cannot be read.
        """
        blob = self.bucket.blob(self._name(oid))
        try:
            data = self._call(
                f"read object {oid.hex}", lambda: blob.download_as_bytes(retry=None)
            )
        except api_exceptions.NotFound as exc:
            raise ObjectNotFoundError(oid.hex, location=self.describe(oid)) from exc
        return bytes(data)

    def stat_object(self, oid: ObjectId) -> tuple[int, float]:
        """Return the object's size and when it was written (seconds since 1970).

        Raises:
            ObjectNotFoundError: If no object has that name.
            BackendUnavailableError: If the bucket cannot be read.
        """
        name = self._name(oid)
        blob = self._call(
            f"look up object {oid.hex}",
            lambda: self.bucket.get_blob(name, retry=None),
        )
        if blob is None:
            raise ObjectNotFoundError(oid.hex, location=self.describe(oid))
        updated = blob.updated
        return int(blob.size or 0), updated.timestamp() if updated else 0.0

    def _exists(self, oid: ObjectId) -> bool:
        blob = self.bucket.blob(self._name(oid))
        return bool(
            self._call(f"look up object {oid.hex}", lambda: blob.exists(retry=None))
        )

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._workers, thread_name_prefix="mvc-gcs"
                )
            return self._pool

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """Return the stored ids among ``oids``, checked in parallel.

        Raises:
            BackendUnavailableError: If the bucket cannot be read.
        """
        wanted = list(dict.fromkeys(oids))
        if len(wanted) <= 1:
            return {oid for oid in wanted if self._exists(oid)}
        flags = list(self._executor().map(self._exists, wanted))
        return {oid for oid, stored in zip(wanted, flags, strict=True) if stored}

    def iter_ids(self) -> Iterator[ObjectId]:
        """Yield every stored object's id, a page of names at a time.

        Raises:
            BackendUnavailableError: If the bucket cannot be listed.
        """
        pages = self.client.list_blobs(
            self.bucket, prefix=self._list_prefix, page_size=self.page_size
        ).pages
        while True:
            try:
                page = next(pages)
            except StopIteration:
                return
            except _FAILURES as exc:
                raise self._unavailable("list objects", exc, 1) from exc
            for blob in page:
                oid = self._parse_name(str(blob.name))
                if oid is not None:
                    yield oid

    def _parse_name(self, name: str) -> ObjectId | None:
        rest = name[len(self._list_prefix) :]
        fan, _, tail = rest.partition("/")
        text = fan + tail
        if len(fan) != 2 or len(text) != 2 * ID_SIZE or not set(text) <= _HEX:
            return None
        return ObjectId.from_hex(text)

    def delete(self, oid: ObjectId) -> None:
        """Remove an object (garbage collection only).

        Raises:
            BackendUnavailableError: If the bucket cannot be written.
        """
        blob = self.bucket.blob(self._name(oid))
        try:
            self._call(f"delete object {oid.hex}", lambda: blob.delete(retry=None))
        except api_exceptions.NotFound:
            return

    def flush(self) -> None:
        """Do nothing: an upload is durable once it has answered."""

    def close(self) -> None:
        """Stop the existence-check threads."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)


def _build_client(location: str) -> storage.Client:
    emulator = os.environ.get(EMULATOR_ENV)
    try:
        if emulator:
            # the emulator takes no credentials; never look any up for it
            anonymous = AnonymousCredentials()  # type: ignore[no-untyped-call]
            return storage.Client(project="test", credentials=anonymous)
        return storage.Client()
    except _FAILURES as exc:
        raise BackendUnavailableError(
            location,
            f"cannot build a GCS client: {redact_text(str(exc))[:300]}",
            hint="set up application default credentials, or STORAGE_EMULATOR_HOST"
            " for an emulator",
        ) from exc
