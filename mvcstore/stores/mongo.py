"""The MongoDB backend: objects, refs and the epoch index in one database.

Everything here holds on MongoDB and on MongoDB-compatible servers that lack
transactions, ``$graphLookup`` and an atomic find-and-modify (FerretDB 1.x):
the only atomic step relied on is an insert against a unique index.

- Objects: one document per stored frame in ``mvc_objects``, keyed by the
  id (as 64 hex digits: MongoDB-compatible servers such as FerretDB filter
  string keys in SQL but binary keys only after decoding every document, see
  docs/backends.md). A frame too large for one document is split into chunk
  documents in ``mvc_chunks`` (unique on ``(id, n)``), and its head document is
  written last, so a reader never sees part of an object.
- Refs: an append-only log, ``mvc_reflog``. Moving a ref inserts its next
  sequence number as ``{_id: "<ref>:<seq>"}``; a duplicate key means another
  writer won. A ref's value is the entry with its highest sequence;
  ``mvc_refs`` keeps a hint of that sequence per ref, which may lag but never
  leads, so a reader probes forward from it.
- The epoch index: ``mvc_epochs``, unique on the epoch uid; ancestry is walked
  in Python with batched ``$in`` queries and a per-process cache (epochs never
  change once indexed).
- The platform's own collections (``Epoch``, ``ModelGraph``, ``Weights``,
  ``TrainingSession``) are brought up to date after each session ref moves;
  ``stores.mongo_platform`` shapes their documents.

Writes use ``w="majority", j=True`` unless the URI sets its own write concern.
Every pymongo error is translated here into an mvcstore error whose URI holds
no credentials. This module must not know what revisions mean.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection
from pymongo.errors import (
    BulkWriteError,
    ConfigurationError,
    ConnectionFailure,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidURI,
    PyMongoError,
)
from pymongo.uri_parser import parse_uri as parse_mongo_uri
from pymongo.write_concern import WriteConcern

from mvcstore.codec import ID_SIZE, ObjectId
from mvcstore.errors import (
    BackendUnavailableError,
    CorruptObjectError,
    InvalidInputError,
    MvcError,
    ObjectNotFoundError,
    RefConflictError,
    RepositoryFormatError,
)
from mvcstore.objects import Epoch, Graph
from mvcstore.stores import mongo_platform as platform
from mvcstore.stores.base import (
    EpochEntry,
    ObjectStore,
    OpenEpoch,
    ReflogEntry,
    get_object,
)
from mvcstore.stores.liveness import DroppedEpoch
from mvcstore.stores.registry import redact_text, redact_uri

__all__ = [
    "MongoDatabase",
    "MongoObjectStore",
    "MongoRefStore",
    "MongoEpochIndex",
    "MongoPlatformMirror",
    "INLINE_LIMIT",
    "CHUNK_SIZE",
]

logger = logging.getLogger(__name__)

Doc = dict[str, Any]

INLINE_LIMIT: Final = 15 << 20
"""Largest frame kept in its head document (the server's limit is 16 MiB)."""

CHUNK_SIZE: Final = 8 << 20
"""Bytes per chunk document of a larger frame."""

OBJECTS: Final = "mvc_objects"
CHUNKS: Final = "mvc_chunks"
REFLOG: Final = "mvc_reflog"
REF_TIPS: Final = "mvc_refs"
META: Final = "mvc_meta"
OPEN_EPOCHS: Final = "mvc_open_epochs"
EPOCHS: Final = "mvc_epochs"
DROPPED: Final = "mvc_dropped"

_BATCH: Final = 1000
"""Ids per ``$in`` query."""

_FULL_LOAD_AT: Final = 5000
"""Missing epochs above which the whole epoch index is read in one pass."""

_ROUNDS_BEFORE_FULL_LOAD: Final = 64
"""Ancestry round trips after which the whole epoch index is read instead."""

_SCANNING_FULL_LOAD_AT: Final = 200
_SCANNING_ROUNDS: Final = 2
"""The same two limits on a server that scans a collection for every query
(FerretDB 1.x without an index on ``_id``): reading everything once is then
cheaper than a few more queries."""

_SEQ_DIGITS: Final = 12


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    # pymongo appends a whole topology description to selection timeouts
    text = text.split(", Timeout:")[0].split(" (configured timeouts")[0]
    if isinstance(exc, ConnectionFailure):
        text = f"cannot reach the server ({text})"
    return redact_text(text)[:300]


@contextmanager
def _translated(location: str, action: str) -> Iterator[None]:
    """Turn a pymongo error raised inside the block into BackendUnavailableError."""
    try:
        yield
    except PyMongoError as exc:
        raise BackendUnavailableError(
            location, f"{action} failed: {_reason(exc)}"
        ) from exc


def _oid(raw: object, *, location: str) -> ObjectId | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or len(raw) != 2 * ID_SIZE:
        raise RepositoryFormatError(
            f"MongoDB holds a malformed id {raw!r}", path=location
        )
    try:
        return ObjectId.from_hex(raw)
    except InvalidInputError as exc:
        raise RepositoryFormatError(
            f"MongoDB holds a malformed id {raw!r}", path=location
        ) from exc


def _req_oid(raw: object, *, location: str) -> ObjectId:
    oid = _oid(raw, location=location)
    if oid is None:
        raise RepositoryFormatError("MongoDB holds a null id", path=location)
    return oid


def _hex(oid: ObjectId | None) -> str | None:
    return oid.hex if oid is not None else None


def _int(value: object, *, location: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RepositoryFormatError(
            f"MongoDB holds {value!r} where an integer belongs", path=location
        )
    return value


def _batches(items: Sequence[ObjectId], size: int = _BATCH) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield [oid.hex for oid in items[start : start + size]]


class MongoDatabase:
    """One MongoDB database and the client that reaches it.

    The client connects lazily: building one does no I/O.

    Args:
        uri: ``mongodb://HOST:PORT/DATABASE?options`` (no credentials).
        username: A user, passed to the client beside the URI.
        password: That user's password.
        client: An existing client to use instead of building one.

    Raises:
        InvalidInputError: If the URI is malformed or names no database.
        BackendUnavailableError: If the client cannot be configured (an SRV
            record that does not resolve, for example).
    """

    def __init__(
        self,
        uri: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client: MongoClient[Doc] | None = None,
    ) -> None:
        shown = redact_uri(uri)
        try:
            parsed = parse_mongo_uri(uri)
        except InvalidURI as exc:
            raise InvalidInputError(
                f"MongoDB URI {shown!r} is malformed ({redact_text(str(exc))})"
            ) from exc
        except ConfigurationError as exc:
            raise BackendUnavailableError(shown, _reason(exc)) from exc
        name = parsed.get("database")
        if not name:
            raise InvalidInputError(
                f"MongoDB URI {shown!r} names no database",
                hint="write it as mongodb://HOST:PORT/DATABASE",
            )
        options = {key.lower() for key in parsed.get("options", {})}
        self.name: str = name
        self.location = shown.split("?")[0]
        if client is None:
            extra: dict[str, Any] = {}
            if "serverselectiontimeoutms" not in options:
                extra["serverSelectionTimeoutMS"] = 10_000
            if username is not None:
                extra["username"] = username
                extra["password"] = password
            try:
                client = MongoClient(uri, **extra)
            except ConfigurationError as exc:
                raise BackendUnavailableError(self.location, _reason(exc)) from exc
        self.client: MongoClient[Doc] = client
        self.db = client.get_database(name)
        self._scans: bool | None = None
        # refs and objects must survive a failover: majority and journaled,
        # unless the URI chose its own write concern
        if {"w", "journal", "j"} & options:
            self.write_concern = client.write_concern
        else:
            self.write_concern = WriteConcern(w="majority", j=True)

    def scans_collections(self) -> bool:
        """Return whether the server answers every query by a collection scan.

        FerretDB 1.x (it says so in ``buildInfo``) finds even an ``_id`` by
        reading the collection; MongoDB uses its index. Asked once.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        if self._scans is None:
            with _translated(self.location, "ask the server what it is"):
                info = self.db.command("buildInfo")
            self._scans = "ferretdbVersion" in info
        return self._scans

    def collection(self, name: str) -> Collection[Doc]:
        """Return a collection of this database with the write concern set."""
        return self.db.get_collection(name, write_concern=self.write_concern)

    def drop(self) -> None:
        """Drop the whole database (tests and throwaway repositories only).

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, "drop database"):
            self.client.drop_database(self.name)

    def close(self) -> None:
        """Close the client and its connections."""
        self.client.close()


class MongoObjectStore:
    """Objects in MongoDB: one document per frame, chunked past ``inline_limit``.

    Args:
        database: The database.
        inline_limit: Largest frame stored in one document.
        chunk_size: Bytes per chunk of a larger frame.
    """

    def __init__(
        self,
        database: MongoDatabase,
        *,
        inline_limit: int = INLINE_LIMIT,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if not 0 < chunk_size <= INLINE_LIMIT or not 0 <= inline_limit <= INLINE_LIMIT:
            raise InvalidInputError(
                f"chunk size {chunk_size} and inline limit {inline_limit} must fit"
                f" in one document ({INLINE_LIMIT} bytes)"
            )
        self.database = database
        self.inline_limit = inline_limit
        self.chunk_size = chunk_size
        self.location = f"{database.location}/{OBJECTS}"
        self._heads = database.collection(OBJECTS)
        self._chunks = database.collection(CHUNKS)
        self._indexed = False
        self._lock = threading.Lock()

    def describe(self, oid: ObjectId) -> str:
        """Return the object's document, for messages."""
        return f"{self.location}/{oid.hex}"

    def _ensure_indexes(self) -> None:
        with self._lock:
            if self._indexed:
                return
            with _translated(self.location, "create the chunk index"):
                self._chunks.create_index(
                    [("id", ASCENDING), ("n", ASCENDING)], unique=True, name="id_n"
                )
            self._indexed = True

    def put_if_absent(self, oid: ObjectId, framed: bytes) -> bool:
        """Store a frame unless it is stored; a duplicate key means it is.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        data = bytes(framed)
        if len(data) <= self.inline_limit:
            head: Doc = {
                "_id": oid.hex,
                "size": len(data),
                "time_ns": time.time_ns(),
                "data": data,
            }
            with _translated(self.location, f"store object {oid.hex}"):
                try:
                    self._heads.insert_one(head)
                except DuplicateKeyError:
                    return False
            logger.debug("put %s (%d bytes, inline)", oid.hex, len(data))
            return True

        self._ensure_indexes()
        with _translated(self.location, f"look up object {oid.hex}"):
            if self._heads.find_one({"_id": oid.hex}, {"_id": 1}) is not None:
                return False
        count = -(-len(data) // self.chunk_size)
        for n in range(count):
            self._put_chunk(
                oid, n, data[n * self.chunk_size : (n + 1) * self.chunk_size]
            )

        # the head last: until it exists no reader sees the object, and a crash
        # before it leaves only chunks that the next writer completes
        head = {
            "_id": oid.hex,
            "size": len(data),
            "time_ns": time.time_ns(),
            "chunks": count,
            "chunk_size": self.chunk_size,
        }
        with _translated(self.location, f"store object {oid.hex}"):
            try:
                self._heads.insert_one(head)
            except DuplicateKeyError:
                return False
        logger.debug("put %s (%d bytes, %d chunks)", oid.hex, len(data), count)
        return True

    def _put_chunk(self, oid: ObjectId, n: int, data: bytes) -> None:
        key = _chunk_key(oid, n)
        doc: Doc = {"_id": key, "id": oid.hex, "n": n, "data": data}
        with _translated(self.location, f"store chunk {n} of object {oid.hex}"):
            try:
                self._chunks.insert_one(doc)
            except DuplicateKeyError:
                # left by a writer that died before the head, or by a racing
                # writer of the same object: keep it if it holds these bytes
                stored = self._chunks.find_one({"_id": key})
                if stored is None or bytes(stored.get("data", b"")) != data:
                    self._chunks.replace_one({"_id": key}, doc, upsert=True)

    def get_framed(self, oid: ObjectId) -> bytes:
        """Return the stored frame of ``oid``, joined from its chunks if split.

        Raises:
            ObjectNotFoundError: If no head document has that id.
            CorruptObjectError: If a chunk is missing or sizes disagree.
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, f"read object {oid.hex}"):
            head = self._heads.find_one({"_id": oid.hex})
        if head is None:
            raise ObjectNotFoundError(oid.hex, location=self.describe(oid))
        data = head.get("data")
        if isinstance(data, bytes):
            return data
        count = head.get("chunks")
        size = head.get("size")
        if not isinstance(count, int) or not isinstance(size, int) or count < 0:
            raise CorruptObjectError(
                oid.hex, "its head document is malformed", location=self.describe(oid)
            )
        parts: list[bytes] = []
        for n in range(count):
            with _translated(self.location, f"read chunk {n} of object {oid.hex}"):
                chunk = self._chunks.find_one({"_id": _chunk_key(oid, n)})
            if chunk is None or not isinstance(chunk.get("data"), bytes):
                raise CorruptObjectError(
                    oid.hex,
                    f"chunk {n} of {count} is missing",
                    location=self.describe(oid),
                )
            parts.append(chunk["data"])
        joined = b"".join(parts)
        if len(joined) != size:
            raise CorruptObjectError(
                oid.hex,
                f"its chunks hold {len(joined)} bytes, its head says {size}",
                location=self.describe(oid),
            )
        return joined

    def stat_object(self, oid: ObjectId) -> tuple[int, float]:
        """Return the frame's size and when it was stored (seconds since 1970).

        Raises:
            ObjectNotFoundError: If no head document has that id.
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, f"look up object {oid.hex}"):
            head = self._heads.find_one({"_id": oid.hex}, {"size": 1, "time_ns": 1})
        if head is None:
            raise ObjectNotFoundError(oid.hex, location=self.describe(oid))
        size = _int(head.get("size"), location=self.location)
        written = head.get("time_ns", 0)
        return size, (written if isinstance(written, int) else 0) / 1e9

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """Return the stored ids among ``oids``: one ``$in`` query per batch.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        wanted = list(dict.fromkeys(oids))
        found: set[ObjectId] = set()
        for batch in _batches(wanted):
            with _translated(self.location, "look up objects"):
                if len(batch) == 1:
                    # an equality on _id is pushed down even where $in is not
                    docs = [self._heads.find_one({"_id": batch[0]}, {"_id": 1})]
                else:
                    docs = list(self._heads.find({"_id": {"$in": batch}}, {"_id": 1}))
            for doc in docs:
                if doc is not None:
                    found.add(_req_oid(doc["_id"], location=self.location))
        return found

    def iter_ids(self) -> Iterator[ObjectId]:
        """Yield every stored object's id (chunks of unfinished writes are not).

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, "list objects"):
            docs = list(self._heads.find({}, {"_id": 1}, batch_size=_BATCH))
        for doc in docs:
            raw = doc["_id"]
            if isinstance(raw, str) and len(raw) == 2 * ID_SIZE:
                try:
                    yield ObjectId.from_hex(raw)
                except InvalidInputError:
                    continue

    def delete(self, oid: ObjectId) -> None:
        """Remove an object, head first (garbage collection only).

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, f"delete object {oid.hex}"):
            self._heads.delete_one({"_id": oid.hex})
            self._chunks.delete_many({"id": oid.hex})

    def flush(self) -> None:
        """Do nothing: every write was acknowledged with the write concern."""


def _chunk_key(oid: ObjectId, n: int) -> str:
    return f"{oid.hex}:{n:06d}"


def _ref_key(ref: str, seq: int) -> str:
    return f"{ref}:{seq:0{_SEQ_DIGITS}d}"


class MongoRefStore:
    """Refs as an append-only log in MongoDB, plus HEAD and open epochs.

    Args:
        database: The database.
        mirror: Updates the platform's collections after a session ref moves.
    """

    def __init__(
        self, database: MongoDatabase, *, mirror: MongoPlatformMirror | None = None
    ) -> None:
        self.database = database
        self.location = f"{database.location}/{REFLOG}"
        self.mirror = mirror
        self._log = database.collection(REFLOG)
        self._tips = database.collection(REF_TIPS)
        self._meta = database.collection(META)
        self._open = database.collection(OPEN_EPOCHS)

    def _entry_target(self, doc: Doc) -> ObjectId | None:
        return _oid(doc.get("new"), location=self.location)

    def _tip(self, ref: str) -> tuple[bool, int, ObjectId | None]:
        """Return (hint exists, highest sequence, value) of ``ref``."""
        hint = self._tips.find_one({"_id": ref})
        seq = 0
        target: ObjectId | None = None
        if hint is not None:
            seq = _int(hint.get("seq", 0), location=self.location)
            target = _oid(hint.get("target"), location=self.location)
        # the hint may lag the log, never lead it: probe forward by _id
        while True:
            entry = self._log.find_one({"_id": _ref_key(ref, seq + 1)})
            if entry is None:
                return hint is not None, seq, target
            seq += 1
            target = self._entry_target(entry)

    def get(self, ref: str) -> ObjectId | None:
        """Return the epoch ``ref`` points at, or None.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, f"read {ref}"):
            return self._tip(ref)[2]

    def compare_and_set(
        self,
        ref: str,
        *,
        old: ObjectId | None,
        new: ObjectId | None,
        message: str,
    ) -> None:
        """Move ``ref`` from ``old`` to ``new`` by inserting its next log entry.

        The insert against the unique ``_id`` is the atomic step: of two writers
        that read the same sequence, one inserts it and the other gets a
        duplicate key.

        Raises:
            RefConflictError: If ``ref`` does not point at ``old``, or another
                writer moved it first.
            BackendUnavailableError: If the server cannot be reached; the ref
                may then have moved or not (read it again).
        """
        with _translated(self.location, f"read {ref}"):
            has_hint, seq, current = self._tip(ref)
        if current != old:
            raise _conflict(ref, old, current, new)
        if not has_hint:
            # the hint before the first entry: refs are listed through hints
            with _translated(self.location, f"register {ref}"):
                try:
                    self._tips.insert_one({"_id": ref, "seq": 0, "target": None})
                except DuplicateKeyError:
                    pass

        token = uuid.uuid4().hex
        entry: Doc = {
            "_id": _ref_key(ref, seq + 1),
            "ref": ref,
            "seq": seq + 1,
            "old": _hex(old),
            "new": _hex(new),
            "time_ns": time.time_ns(),
            "message": message,
            "token": token,
        }
        with _translated(self.location, f"move {ref}"):
            try:
                self._log.insert_one(entry)
            except DuplicateKeyError as exc:
                winner = self._log.find_one({"_id": entry["_id"]})
                # a retried insert of our own entry is a success, not a race
                if winner is None or winner.get("token") != token:
                    actual = self._entry_target(winner) if winner else None
                    raise _conflict(ref, old, actual, new) from exc
        logger.debug("ref %s: %s -> %s (seq %d)", ref, old, new, seq + 1)

        # the ref has moved; what follows only speeds up readers
        try:
            self._tips.update_one(
                {"_id": ref, "seq": {"$lt": seq + 1}},
                {"$set": {"seq": seq + 1, "target": _hex(new)}},
            )
        except PyMongoError as exc:
            logger.warning(
                "%s moved, but its hint in %s was not updated (%s)",
                ref,
                REF_TIPS,
                _reason(exc),
            )
        if self.mirror is not None:
            self.mirror.ref_moved(ref, old, new)

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, ObjectId]]:
        """Yield (name, epoch) of refs starting with ``prefix``, sorted by name.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, "list refs"):
            names = sorted(
                str(doc["_id"])
                for doc in self._tips.find({}, {"_id": 1})
                if str(doc["_id"]).startswith(prefix)
            )
            found = [(name, self._tip(name)[2]) for name in names]
        for name, target in found:
            if target is not None:
                yield name, target

    def reflog(self, ref: str | None = None) -> list[ReflogEntry]:
        """Return the moves of ``ref`` (or of every ref), oldest first.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, "read the reflog"):
            if ref is None:
                docs = list(self._log.find({}).sort([("time_ns", 1), ("_id", 1)]))
            else:
                docs = list(self._log.find({"ref": ref}).sort("seq", 1))
        return [
            ReflogEntry(
                ref=str(doc["ref"]),
                old=_oid(doc.get("old"), location=self.location),
                new=_oid(doc.get("new"), location=self.location),
                time_ns=_int(doc.get("time_ns"), location=self.location),
                message=str(doc.get("message", "")),
            )
            for doc in docs
        ]

    def get_head(self) -> str | None:
        """Return the current session's name, or None."""
        with _translated(self.location, "read HEAD"):
            doc = self._meta.find_one({"_id": "HEAD"})
        return str(doc["value"]) if doc is not None else None

    def set_head(self, session: str) -> None:
        """Make ``session`` the current session (the last writer wins)."""
        _upsert(self._meta, "HEAD", {"value": session}, location=self.location)

    def set_open_epoch(self, epoch: OpenEpoch) -> None:
        """Record an open epoch."""
        _upsert(
            self._open,
            epoch.uid,
            {
                "session": epoch.session,
                "base": _hex(epoch.base),
                "owner": epoch.owner,
                "started_ns": epoch.started_ns,
            },
            location=self.location,
        )

    def clear_open_epoch(self, session: str, uid: str) -> None:
        """Forget the open epoch ``uid`` of ``session``."""
        with _translated(self.location, f"clear open epoch {uid}"):
            self._open.delete_one({"_id": uid, "session": session})

    def iter_open_epochs(self) -> Iterator[OpenEpoch]:
        """Yield every recorded open epoch."""
        with _translated(self.location, "list open epochs"):
            docs = list(self._open.find({}).sort([("session", 1), ("started_ns", 1)]))
        for doc in docs:
            yield OpenEpoch(
                session=str(doc["session"]),
                uid=str(doc["_id"]),
                base=_oid(doc.get("base"), location=self.location),
                owner=str(doc.get("owner", "")),
                started_ns=_int(doc.get("started_ns", 0), location=self.location),
            )


def _conflict(
    ref: str, old: ObjectId | None, actual: ObjectId | None, new: ObjectId | None
) -> RefConflictError:
    return RefConflictError(
        ref,
        expected=old.hex if old else None,
        actual=actual.hex if actual else None,
        proposed=new.hex if new else None,
    )


def _upsert(collection: Collection[Doc], key: str, doc: Doc, *, location: str) -> None:
    with _translated(location, f"write {key}"):
        try:
            collection.replace_one({"_id": key}, doc, upsert=True)
        except DuplicateKeyError:
            # two upserts raced to insert; the document exists now: replace it
            collection.replace_one({"_id": key}, doc, upsert=True)


class MongoEpochIndex:
    """The epoch index in MongoDB, with ancestry walked in Python.

    Epoch records never change once indexed, so each process keeps every
    entry it has read; only epochs it has not seen cost a query.

    Args:
        database: The database.
    """

    def __init__(self, database: MongoDatabase) -> None:
        self.database = database
        self.location = f"{database.location}/{EPOCHS}"
        self._epochs = database.collection(EPOCHS)
        self._dropped = database.collection(DROPPED)
        self._entries: dict[ObjectId, EpochEntry] = {}
        self._content: dict[ObjectId, tuple[ObjectId | None, ObjectId | None]] = {}
        self._indexed = False
        self._lock = threading.Lock()

    def _ensure_indexes(self) -> None:
        with self._lock:
            if self._indexed:
                return
            with _translated(self.location, "create the epoch uid index"):
                self._epochs.create_index("uid", unique=True, name="uid")
            self._indexed = True

    def add(self, oid: ObjectId, epoch: Epoch) -> None:
        """Index an epoch; a second add of the same epoch does nothing.

        Raises:
            InvalidInputError: If another epoch already carries the same uid.
            BackendUnavailableError: If the server cannot be reached.
        """
        if oid in self._entries:
            return
        self._ensure_indexes()
        doc: Doc = {
            "_id": oid.hex,
            "parents": [parent.hex for parent in epoch.parents],
            "number": epoch.number,
            "step": epoch.step,
            "uid": epoch.uid,
            "session": epoch.session,
            "time_ns": epoch.time_ns,
            "state": _hex(epoch.state),
            "graph": _hex(epoch.graph),
        }
        with _translated(self.location, f"index epoch {oid.hex}"):
            try:
                self._epochs.insert_one(doc)
            except DuplicateKeyError as exc:
                if self._epochs.find_one({"_id": oid.hex}, {"_id": 1}) is None:
                    other = self._epochs.find_one({"uid": epoch.uid}, {"_id": 1})
                    other_hex = str(other["_id"]) if other else "another epoch"
                    raise InvalidInputError(
                        f"epoch uid {epoch.uid} is already used by epoch {other_hex}",
                        hint="commit with a new Session object",
                    ) from exc
        self._remember(doc)

    def _remember(self, doc: Doc) -> EpochEntry:
        loc = self.location
        oid = _req_oid(doc.get("_id"), location=loc)
        parents = doc.get("parents", [])
        if not isinstance(parents, list):
            raise RepositoryFormatError(
                f"epoch {oid.hex} has malformed parents", path=loc
            )
        entry = EpochEntry(
            id=oid,
            parents=tuple(_req_oid(raw, location=loc) for raw in parents),
            number=_int(doc.get("number"), location=loc),
            step=_int(doc.get("step"), location=loc),
            uid=str(doc.get("uid", "")),
            session=str(doc.get("session", "")),
            time_ns=_int(doc.get("time_ns"), location=loc),
        )
        self._entries[oid] = entry
        self._content[oid] = (
            _oid(doc.get("state"), location=loc),
            _oid(doc.get("graph"), location=loc),
        )
        return entry

    def _fetch(self, missing: Sequence[ObjectId]) -> None:
        scans = self.database.scans_collections()
        if len(missing) > (_SCANNING_FULL_LOAD_AT if scans else _FULL_LOAD_AT):
            self._load_all()
            return
        for batch in _batches(missing):
            with _translated(self.location, "read epochs"):
                if len(batch) == 1:
                    one = self._epochs.find_one({"_id": batch[0]})
                    docs = [one] if one is not None else []
                else:
                    docs = list(self._epochs.find({"_id": {"$in": batch}}))
            for doc in docs:
                self._remember(doc)

    def _load_all(self) -> None:
        with _translated(self.location, "read the epoch index"):
            docs = list(self._epochs.find({}, batch_size=5000))
        for doc in docs:
            self._remember(doc)

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, EpochEntry]:
        """Return the indexed entries among ``oids``.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        wanted = list(dict.fromkeys(oids))
        missing = [oid for oid in wanted if oid not in self._entries]
        if missing:
            self._fetch(missing)
        return {oid: self._entries[oid] for oid in wanted if oid in self._entries}

    def content_of(
        self, oids: Iterable[ObjectId]
    ) -> dict[ObjectId, tuple[ObjectId | None, ObjectId | None]]:
        """Return (state, graph) of the indexed epochs among ``oids``."""
        found = self.get_many(oids)
        return {oid: self._content[oid] for oid in found}

    def find_prefix(self, prefix: str, *, limit: int = 10) -> list[ObjectId]:
        """Return up to ``limit`` epoch ids whose hex starts with ``prefix``."""
        low = prefix.lower().ljust(2 * ID_SIZE, "0")
        high = prefix.lower().ljust(2 * ID_SIZE, "f")
        with _translated(self.location, "search epoch ids"):
            docs = list(
                self._epochs.find({"_id": {"$gte": low, "$lte": high}}, {"_id": 1})
                .sort("_id", 1)
                .limit(limit)
            )
        return [_req_oid(doc["_id"], location=self.location) for doc in docs]

    def ancestors(self, heads: Sequence[ObjectId]) -> set[ObjectId]:
        """Return every epoch reachable from ``heads`` (heads included).

        A walk costs one ``$in`` query per generation of unseen epochs; a
        long line switches to one read of the whole index instead.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        reached = set(heads)
        frontier = list(dict.fromkeys(heads))
        unknown: set[ObjectId] = set()
        round_trips = 0
        rounds = (
            _SCANNING_ROUNDS
            if self.database.scans_collections()
            else _ROUNDS_BEFORE_FULL_LOAD
        )
        while frontier:
            missing = [
                oid
                for oid in frontier
                if oid not in self._entries and oid not in unknown
            ]
            if missing:
                if round_trips >= rounds:
                    self._load_all()
                else:
                    self._fetch(missing)
                round_trips += 1
                unknown.update(oid for oid in missing if oid not in self._entries)
            following: list[ObjectId] = []
            for oid in frontier:
                entry = self._entries.get(oid)
                if entry is None:
                    continue
                for parent in entry.parents:
                    if parent not in reached:
                        reached.add(parent)
                        following.append(parent)
            frontier = following
        return reached

    def first_parent_line(self, head: ObjectId) -> list[EpochEntry]:
        """Return ``head`` and its first parents, oldest first.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        self.ancestors([head])
        line: list[EpochEntry] = []
        current: ObjectId | None = head
        while current is not None:
            entry = self._entries.get(current)
            if entry is None:
                break
            line.append(entry)
            current = entry.parents[0] if entry.parents else None
        line.reverse()
        return line

    def iter_entries(self) -> Iterator[EpochEntry]:
        """Yield every indexed epoch, oldest commit first.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, "read the epoch index"):
            docs = list(self._epochs.find({}).sort([("time_ns", 1), ("_id", 1)]))
        for doc in docs:
            yield self._remember(doc)

    def add_dropped(
        self, oids: Iterable[ObjectId], *, time_ns: int, policy: str
    ) -> int:
        """Record epochs whose weights were dropped; earlier records are kept.

        Returns:
            How many epochs were newly recorded.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        added = 0
        for oid in dict.fromkeys(oids):
            with _translated(self.location, f"record the drop of epoch {oid.hex}"):
                try:
                    self._dropped.insert_one(
                        {"_id": oid.hex, "time_ns": time_ns, "policy": policy}
                    )
                except DuplicateKeyError:
                    continue
            added += 1
        return added

    def get_dropped(self, oids: Iterable[ObjectId]) -> dict[ObjectId, DroppedEpoch]:
        """Return the drop records of those of ``oids`` that were dropped.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        out: dict[ObjectId, DroppedEpoch] = {}
        for batch in _batches(list(dict.fromkeys(oids))):
            with _translated(self.location, "read drop records"):
                docs = list(self._dropped.find({"_id": {"$in": batch}}))
            for doc in docs:
                record = self._drop_record(doc)
                out[record.id] = record
        return out

    def iter_dropped(self) -> Iterator[DroppedEpoch]:
        """Yield every drop record, oldest first.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        with _translated(self.location, "read drop records"):
            docs = list(self._dropped.find({}).sort([("time_ns", 1), ("_id", 1)]))
        for doc in docs:
            yield self._drop_record(doc)

    def _drop_record(self, doc: Doc) -> DroppedEpoch:
        return DroppedEpoch(
            id=_req_oid(doc.get("_id"), location=self.location),
            time_ns=_int(doc.get("time_ns"), location=self.location),
            policy=str(doc.get("policy", "")),
        )

    def delete(self, oids: Iterable[ObjectId]) -> None:
        """Remove epochs from the index (garbage collection only).

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        doomed = list(dict.fromkeys(oids))
        for batch in _batches(doomed):
            with _translated(self.location, "delete epochs"):
                self._epochs.delete_many({"_id": {"$in": batch}})
        for oid in doomed:
            self._entries.pop(oid, None)
            self._content.pop(oid, None)


class MongoPlatformMirror:
    """The platform's own collections, kept in step with session refs.

    ``Epoch``, ``ModelGraph``, ``Weights`` and ``TrainingSession`` (see
    ``stores.mongo_platform`` and docs/backends.md). It is called after a ref
    has moved, so it never decides a move: a failure here is logged as a
    warning and repaired by the session's next move (or by ``rebuild``), since
    the collections are derived from refs and objects.

    Args:
        database: The database the platform reads.
        objects: Where graph objects are read from.
        index: The epoch index (lineage, uids, state and graph ids).
        session_prefix: The ref prefix that marks sessions (``sessions/``).
    """

    def __init__(
        self,
        database: MongoDatabase,
        *,
        objects: ObjectStore,
        index: MongoEpochIndex,
        session_prefix: str,
    ) -> None:
        self.database = database
        self.objects = objects
        self.index = index
        self.session_prefix = session_prefix
        self.location = database.location
        self._epochs = database.collection(platform.EPOCH)
        self._graphs = database.collection(platform.MODEL_GRAPH)
        self._weights = database.collection(platform.WEIGHTS)
        self._sessions = database.collection(platform.TRAINING_SESSION)
        self._model_names: dict[ObjectId, str] = {}
        self._known_weights: set[ObjectId] = set()

    def ref_moved(self, ref: str, old: ObjectId | None, new: ObjectId | None) -> None:
        """Bring the platform's collections up to date after ``ref`` moved.

        Never raises: the move has happened, and a failure here only leaves the
        derived collections behind until the session moves again.
        """
        if not ref.startswith(self.session_prefix):
            return
        session = ref[len(self.session_prefix) :]
        try:
            self._session_moved(session, old, new)
        except (PyMongoError, MvcError) as exc:
            logger.warning(
                "platform collections not updated for session %s (%s); they are"
                " rebuilt at its next move",
                session,
                _reason(exc),
            )

    def rebuild(self, session: str, head: ObjectId | None) -> None:
        """Rewrite the platform's documents of one session from its head.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
            ObjectNotFoundError: If the head or its graph is missing.
        """
        with _translated(self.location, f"rebuild session {session}"):
            if head is None:
                self._sessions.delete_one({"_id": session})
                return
            state, graph = self._content(head)
            name = self._ensure_graph(graph, state, default=session)
            self._ensure_weights(state, graph)
            self._rebuild(session, head, state, name)

    def _content(self, oid: ObjectId) -> tuple[ObjectId | None, ObjectId | None]:
        content = self.index.content_of([oid])
        if oid not in content:
            raise ObjectNotFoundError(oid.hex, location=self.index.location)
        return content[oid]

    def _session_moved(
        self, session: str, old: ObjectId | None, new: ObjectId | None
    ) -> None:
        if new is None:
            self._sessions.delete_one({"_id": session})
            return
        entry = self.index.get_many([new]).get(new)
        if entry is None:
            raise ObjectNotFoundError(new.hex, location=self.index.location)
        state, graph = self._content(new)
        name = self._ensure_graph(graph, state, default=session)
        self._ensure_weights(state, graph)
        self._ensure_epochs([entry])

        # the common case: one epoch appended to the line the document lists
        if old is not None and entry.parents[:1] == (old,):
            result = self._sessions.update_one(
                {
                    "_id": session,
                    "headEpochId": old.hex,
                    "epochCount": {"$lt": platform.MAX_SESSION_EPOCHS},
                },
                {
                    "$push": {"epochs": platform.epoch_entry(entry.uid, graph, state)},
                    "$set": {
                        "headEpochId": new.hex,
                        "weightsId": state.hex if state else None,
                        "modelName": name,
                        "updatedNs": time.time_ns(),
                    },
                    "$inc": {"epochCount": 1},
                },
            )
            if result.matched_count == 1:
                return
        self._rebuild(session, new, state, name)

    def _rebuild(
        self, session: str, head: ObjectId, state: ObjectId | None, name: str
    ) -> None:
        line = self.index.first_parent_line(head)
        self._ensure_epochs(line)
        content = self.index.content_of(entry.id for entry in line)
        listed = [
            platform.epoch_entry(entry.uid, content[entry.id][1], content[entry.id][0])
            for entry in line
        ]
        doc = platform.session_doc(
            session,
            listed,
            head=head,
            state=state,
            model_name=name,
            time_ns=time.time_ns(),
        )
        try:
            self._sessions.replace_one({"_id": session}, doc, upsert=True)
        except DuplicateKeyError:
            self._sessions.replace_one({"_id": session}, doc, upsert=True)

    def _ensure_epochs(self, entries: Sequence[EpochEntry]) -> None:
        uids = [entry.uid for entry in entries]
        existing: set[str] = set()
        for start in range(0, len(uids), 5000):
            batch = uids[start : start + 5000]
            if len(batch) == 1:
                found = self._epochs.find_one({"_id": batch[0]}, {"_id": 1})
                existing.update([str(found["_id"])] if found else [])
            else:
                existing.update(
                    str(doc["_id"])
                    for doc in self._epochs.find({"_id": {"$in": batch}}, {"_id": 1})
                )
        fresh = [entry for entry in entries if entry.uid not in existing]
        if not fresh:
            return
        parents = self.index.get_many(
            entry.parents[0] for entry in fresh if entry.parents
        )
        content = self.index.content_of(entry.id for entry in fresh)
        docs = []
        for entry in fresh:
            state, graph = content.get(entry.id, (None, None))
            parent = parents.get(entry.parents[0]) if entry.parents else None
            docs.append(
                platform.epoch_doc(
                    uid=entry.uid,
                    epoch_id=entry.id,
                    graph=graph,
                    state=state,
                    number=entry.number,
                    step=entry.step,
                    session=entry.session,
                    time_ns=entry.time_ns,
                    parent_uid=parent.uid if parent else None,
                )
            )
        try:
            self._epochs.insert_many(docs, ordered=False)
        except BulkWriteError as exc:
            # another writer inserted some of them: the same immutable content
            errors = exc.details.get("writeErrors", [])
            if any(error.get("code") != 11000 for error in errors):
                raise

    def _ensure_weights(self, state: ObjectId | None, graph: ObjectId | None) -> None:
        if state is None or state in self._known_weights:
            return
        doc = platform.weights_doc(state, graph, self.objects.describe(state))
        try:
            self._weights.insert_one(doc)
        except DuplicateKeyError:
            pass
        self._known_weights.add(state)

    def _ensure_graph(
        self, graph: ObjectId | None, state: ObjectId | None, *, default: str
    ) -> str:
        if graph is None:
            return default
        if graph in self._model_names:
            return self._model_names[graph]
        found = self._graphs.find_one({"_id": graph.hex}, {"modelName": 1})
        if found is not None:
            name = str(found.get("modelName") or default)
            self._model_names[graph] = name
            return name

        obj = get_object(self.objects, graph)
        if not isinstance(obj, Graph):
            raise CorruptObjectError(
                graph.hex,
                f"expected a graph, found a {obj.kind}",
                location=self.objects.describe(graph),
            )
        name = platform.model_name_of(obj, default)
        try:
            self._graphs.insert_one(
                platform.model_graph_doc(graph, state, obj, model_name=name)
            )
        except DuplicateKeyError:
            pass
        except DocumentTooLarge:
            # past the document limit: the platform gets the graph's location
            stub = platform.model_graph_stub(
                graph,
                state,
                node_count=len(obj.nodes),
                location=self.objects.describe(graph),
                model_name=name,
            )
            try:
                self._graphs.insert_one(stub)
            except DuplicateKeyError:
                pass
        self._model_names[graph] = name
        return name
