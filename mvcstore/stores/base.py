"""The store protocols every backend implements, and typed access over them.

An ``ObjectStore`` keeps stored frames by id and never changes one once written
(a store that can also write many objects at once, durably together, offers
``open_batch``; ``open_batch`` here gives every other store a batch made of
``put_if_absent`` calls);
a ``RefStore`` keeps named pointers to epochs, moved only by compare-and-set,
with a reflog, the current session (HEAD) and each session's open epoch; an
``EpochIndex`` answers prefix and ancestry questions without reading objects.
This layer must not know about sessions' meaning, revisions or metric documents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, cast, runtime_checkable

from mvcstore.codec import (
    FramePart,
    ObjectId,
    frame,
    hash_object,
    join_parts,
    unframe,
)
from mvcstore.errors import CorruptObjectError
from mvcstore.objects import (
    Epoch,
    StoredObject,
    decode_object,
    encode_object,
)

__all__ = [
    "ObjectStore",
    "ObjectBatch",
    "BatchingObjectStore",
    "LooseBatch",
    "open_batch",
    "read_frame_prefix",
    "RefStore",
    "EpochIndex",
    "ReflogEntry",
    "OpenEpoch",
    "EpochEntry",
    "put_object",
    "get_object",
]


@runtime_checkable
class ObjectStore(Protocol):
    """Immutable objects by id, stored as frames.

    Implementations never overwrite an object, and never return bytes they did
    not verify as a complete frame of the right id (``get_object`` does that).
    """

    location: str
    """Where the objects live, for messages (a path or a URI without secrets)."""

    def put_if_absent(self, oid: ObjectId, framed: bytes) -> bool:
        """Store ``framed`` under ``oid`` unless an object with that id exists.

        Returns:
            True if this call wrote the object.

        Raises:
            BackendUnavailableError: If the backend cannot be written.
        """
        ...

    def get_framed(self, oid: ObjectId) -> bytes:
        """Return the stored frame of ``oid``, unverified.

        Raises:
            ObjectNotFoundError: If no object has that id.
            BackendUnavailableError: If the backend cannot be read.
        """
        ...

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """Return the subset of ``oids`` that is stored."""
        ...

    def iter_ids(self) -> Iterator[ObjectId]:
        """Yield the id of every stored object, in no particular order."""
        ...

    def describe(self, oid: ObjectId) -> str:
        """Return where ``oid`` is (or would be) stored, for messages."""
        ...

    def delete(self, oid: ObjectId) -> None:
        """Remove an object; used only by garbage collection."""
        ...

    def flush(self) -> None:
        """Make every object written so far durable."""
        ...


@runtime_checkable
class ObjectBatch(Protocol):
    """Objects written together, durable together when committed.

    Until ``commit`` returns, none of the batch's objects may be readable from
    the store; a batch that is aborted, or whose writer dies, leaves at most
    garbage. Objects may be put from several threads at once.
    """

    def put(self, oid: ObjectId, parts: Sequence[FramePart]) -> bool:
        """Add a frame (the concatenation of ``parts``) unless ``oid`` is stored.

        The parts are consumed before it returns: the caller may then reuse
        their buffers.

        Returns:
            True if this call added the object.

        Raises:
            BackendUnavailableError: If the backend cannot be written.
        """
        ...

    def has(self, oid: ObjectId) -> bool:
        """Return whether ``oid`` is stored or already in this batch."""
        ...

    def commit(self) -> None:
        """Make every object of the batch durable and readable.

        Raises:
            BackendUnavailableError: If the backend cannot be written.
        """
        ...

    def abort(self) -> None:
        """Give up the batch; what it wrote is garbage at worst."""
        ...


@runtime_checkable
class BatchingObjectStore(Protocol):
    """An object store that writes many objects at once (such as a pack)."""

    def open_batch(self) -> ObjectBatch:
        """Start a batch of new objects."""
        ...


class LooseBatch:
    """A batch over any ``ObjectStore``: one ``put_if_absent`` per object.

    Objects become readable one by one as they are put; ``commit`` flushes the
    store, which makes them durable. Write order is the caller's order, so
    an object is stored after those it names (W2 of the format).

    Args:
        store: The store written to.
    """

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def put(self, oid: ObjectId, parts: Sequence[FramePart]) -> bool:
        """Store the frame unless ``oid`` is stored."""
        if oid in self.store.has_many([oid]):
            return False
        return self.store.put_if_absent(oid, join_parts(parts))

    def has(self, oid: ObjectId) -> bool:
        """Return whether ``oid`` is stored."""
        return oid in self.store.has_many([oid])

    def commit(self) -> None:
        """Flush the store."""
        self.store.flush()

    def abort(self) -> None:
        """Nothing to undo: what was written is unreferenced garbage."""


def open_batch(store: ObjectStore) -> ObjectBatch:
    """Start a batch on ``store``: its own kind if it has one, else a loose one."""
    if isinstance(store, BatchingObjectStore):
        return store.open_batch()
    return LooseBatch(store)


def read_frame_prefix(store: ObjectStore, oid: ObjectId, size: int) -> bytes:
    """Return the first ``size`` bytes (or fewer) of the stored frame of ``oid``.

    Stores that can read part of a frame offer ``get_frame_prefix``; for the
    others the whole frame is read.

    Raises:
        ObjectNotFoundError: If no object has that id.
    """
    reader = getattr(store, "get_frame_prefix", None)
    if callable(reader):
        prefix: bytes = reader(oid, size)
        return prefix
    return store.get_framed(oid)[:size]


@dataclass(frozen=True, slots=True)
class ReflogEntry:
    """One move of a ref.

    Attributes:
        ref: The ref's full name (``sessions/a``, ``tags/best``).
        old: The epoch it pointed at before, or None if it was created.
        new: The epoch it points at after, or None if it was deleted.
        time_ns: When it moved.
        message: Why it moved.
    """

    ref: str
    old: ObjectId | None
    new: ObjectId | None
    time_ns: int
    message: str


@dataclass(frozen=True, slots=True)
class OpenEpoch:
    """A session's epoch in progress: metric documents may already carry its uid.

    Attributes:
        session: The session name.
        uid: The uid the epoch's metric documents carry.
        base: The session head the epoch continues from, or None.
        owner: The writer holding it, ``host:pid``.
        started_ns: When it was opened.
    """

    session: str
    uid: str
    base: ObjectId | None
    owner: str
    started_ns: int


@runtime_checkable
class RefStore(Protocol):
    """Named pointers to epochs, the current session and open epochs."""

    location: str

    def get(self, ref: str) -> ObjectId | None:
        """Return the epoch ``ref`` points at, or None if it does not exist."""
        ...

    def compare_and_set(
        self,
        ref: str,
        *,
        old: ObjectId | None,
        new: ObjectId | None,
        message: str,
    ) -> None:
        """Move ``ref`` from ``old`` to ``new`` atomically, and reflog the move.

        ``old=None`` creates the ref; ``new=None`` deletes it.

        Raises:
            RefConflictError: If ``ref`` does not point at ``old``.
        """
        ...

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, ObjectId]]:
        """Yield (name, epoch) of every ref starting with ``prefix``, by name."""
        ...

    def reflog(self, ref: str | None = None) -> list[ReflogEntry]:
        """Return the moves of ``ref`` (all refs when None), oldest first."""
        ...

    def get_head(self) -> str | None:
        """Return the current session's name, or None."""
        ...

    def set_head(self, session: str) -> None:
        """Make ``session`` the current session."""
        ...

    def set_open_epoch(self, epoch: OpenEpoch) -> None:
        """Record an open epoch (a session may have several writers)."""
        ...

    def clear_open_epoch(self, session: str, uid: str) -> None:
        """Forget the open epoch ``uid`` of ``session``."""
        ...

    def iter_open_epochs(self) -> Iterator[OpenEpoch]:
        """Yield every recorded open epoch."""
        ...


@dataclass(frozen=True, slots=True)
class EpochEntry:
    """What the epoch index keeps of an epoch.

    Attributes:
        id: The epoch's id.
        parents: Its parents' ids.
        number: Its epoch number.
        step: Its last step.
        uid: The uid its metric documents carry.
        session: The session it was committed on.
        time_ns: Its commit time.
    """

    id: ObjectId
    parents: tuple[ObjectId, ...]
    number: int
    step: int
    uid: str
    session: str
    time_ns: int


@runtime_checkable
class EpochIndex(Protocol):
    """A derived index of epoch records: ancestry and prefix look-ups."""

    def add(self, oid: ObjectId, epoch: Epoch) -> None:
        """Index an epoch (idempotent)."""
        ...

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, EpochEntry]:
        """Return the entries of the given epochs that are indexed."""
        ...

    def find_prefix(self, prefix: str, *, limit: int = 10) -> list[ObjectId]:
        """Return up to ``limit`` epoch ids whose hex starts with ``prefix``."""
        ...

    def ancestors(self, heads: Sequence[ObjectId]) -> set[ObjectId]:
        """Return every epoch reachable from ``heads`` (heads included)."""
        ...

    def iter_entries(self) -> Iterator[EpochEntry]:
        """Yield every indexed epoch."""
        ...

    def delete(self, oids: Iterable[ObjectId]) -> None:
        """Remove epochs from the index; used only by garbage collection."""
        ...


def put_object(
    target: ObjectStore | ObjectBatch, obj: StoredObject, *, level: int = 3
) -> ObjectId:
    """Encode, frame and store an object unless it is already stored.

    Args:
        target: The store, or a batch of it, to write to.
        obj: The object.
        level: The zstandard level (0 stores raw).

    Returns:
        The object's id.
    """
    payload = encode_object(obj)
    oid = hash_object(obj.kind, payload)
    # a batch has ``put`` and ``commit``; checked by attribute, which is cheaper
    # than a runtime protocol check for each of a commit's many small objects
    if hasattr(target, "commit") and hasattr(target, "put"):
        target = cast(ObjectBatch, target)
        if not target.has(oid):
            target.put(oid, [frame(obj.kind, payload, level=level)])
    elif oid not in target.has_many([oid]):
        target.put_if_absent(oid, frame(obj.kind, payload, level=level))
    return oid


def get_object(store: ObjectStore, oid: ObjectId) -> StoredObject:
    """Read, verify and decode an object.

    A blob stored as a delta or in chunks is read with its base or chunks.

    Raises:
        ObjectNotFoundError: If it (or an object its frame needs) is not stored.
        CorruptObjectError: If its bytes do not hash back to ``oid`` or do not
            decode.
    """
    framed = store.get_framed(oid)
    location = store.describe(oid)
    decoded = unframe(framed, object_id=oid, location=location, source=store)
    try:
        return decode_object(decoded.kind, decoded.payload, oid=oid)
    except CorruptObjectError as exc:
        raise CorruptObjectError(oid.hex, exc.reason, location=location) from exc
