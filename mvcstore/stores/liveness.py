"""What keeps a stored object alive: references, frame dependencies, drops.

Garbage collection and fsck walk from the refs through the links an object
holds (``objects.children_of``) and through the links its stored frame holds
(a delta frame's base blob, a chunked object's chunks: ``frame_dependencies``).
This module defines the optional capabilities a store may offer beyond
``ObjectStore`` for that walk: frame dependencies, the stored size and age of
an object, and the record of epochs whose weights a retention policy dropped.
It decides nothing about what to keep; ``mvcstore.gc`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from mvcstore.codec import ObjectId
from mvcstore.objects import Blob, Epoch, StoredObject, children_of
from mvcstore.stores.base import ObjectStore

__all__ = [
    "FrameDependencies",
    "ObjectStats",
    "FrameKinds",
    "DroppedEpoch",
    "DropLog",
    "frame_dependencies",
    "object_links",
    "references",
]


@runtime_checkable
class FrameDependencies(Protocol):
    """A store whose frames may need other objects to be read."""

    def frame_dependencies(self, oid: ObjectId) -> Sequence[ObjectId]:
        """Return the objects the stored frame of ``oid`` needs to be read.

        A delta frame needs its base blob; a chunked frame needs its chunks.
        A whole frame needs nothing.

        Raises:
            ObjectNotFoundError: If ``oid`` is not stored.
            CorruptObjectError: If its frame cannot be parsed.
        """
        ...


@runtime_checkable
class ObjectStats(Protocol):
    """A store that can tell an object's stored size and age."""

    def stat_object(self, oid: ObjectId) -> tuple[int, float]:
        """Return the bytes ``oid`` takes and when it was last written.

        Returns:
            The stored size in bytes and the modification time in seconds since
            1970 (of the object's file, or of the pack holding it).

        Raises:
            ObjectNotFoundError: If ``oid`` is not stored.
        """
        ...


@runtime_checkable
class FrameKinds(Protocol):
    """A store that can tell an object's kind without reading all of it."""

    def object_kind(self, oid: ObjectId) -> str | None:
        """Return the kind of ``oid`` from its frame header, or None if unsure.

        Raises:
            ObjectNotFoundError: If ``oid`` is not stored.
        """
        ...


@dataclass(frozen=True, slots=True)
class DroppedEpoch:
    """An epoch whose weights and training state a retention policy dropped.

    Attributes:
        id: The epoch's id.
        time_ns: When the policy dropped them.
        policy: The policy, as ``mvc retain`` options.
    """

    id: ObjectId
    time_ns: int
    policy: str


@runtime_checkable
class DropLog(Protocol):
    """Where the epochs whose weights were dropped are recorded.

    Epoch objects are immutable, so a drop is recorded beside them; the record
    is primary data, not derived from objects.
    """

    def add_dropped(
        self, oids: Iterable[ObjectId], *, time_ns: int, policy: str
    ) -> int:
        """Record drops in one transaction; already dropped epochs keep theirs.

        Returns:
            How many epochs were newly recorded.
        """
        ...

    def get_dropped(self, oids: Iterable[ObjectId]) -> dict[ObjectId, DroppedEpoch]:
        """Return the drop records of those of ``oids`` that were dropped."""
        ...

    def iter_dropped(self) -> Iterator[DroppedEpoch]:
        """Yield every drop record."""
        ...


def frame_dependencies(store: ObjectStore, oid: ObjectId) -> list[ObjectId]:
    """Return what the stored frame of ``oid`` needs; nothing for plain stores.

    Raises:
        ObjectNotFoundError: If ``oid`` is not stored.
        CorruptObjectError: If its frame cannot be parsed.
    """
    if isinstance(store, FrameDependencies):
        return list(store.frame_dependencies(oid))
    return []


def object_links(obj: StoredObject, *, dropped: bool = False) -> list[ObjectId]:
    """Return the ids that the fields of ``obj`` keep alive.

    That is ``children_of``, except that an epoch whose weights were dropped
    keeps only its parents and its graph: its state and extra states are
    garbage.

    Args:
        obj: The decoded object.
        dropped: Whether ``obj`` is an epoch whose weights were dropped.
    """
    if isinstance(obj, Epoch) and dropped:
        return [*obj.parents, *([obj.graph] if obj.graph is not None else [])]
    if isinstance(obj, Blob):
        return []
    return list(children_of(obj))


def references(
    store: ObjectStore, oid: ObjectId, obj: StoredObject, *, dropped: bool = False
) -> list[ObjectId]:
    """Return every object that ``obj``, stored as ``oid``, keeps alive.

    That is ``object_links`` plus the objects its stored frame needs.

    Args:
        store: The store holding ``oid``.
        oid: The object's id.
        obj: The decoded object.
        dropped: Whether ``obj`` is an epoch whose weights were dropped.

    Raises:
        ObjectNotFoundError: If ``oid`` is not stored.
        CorruptObjectError: If its frame cannot be parsed.
    """
    return [*object_links(obj, dropped=dropped), *frame_dependencies(store, oid)]
