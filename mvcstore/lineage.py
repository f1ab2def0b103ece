"""Ancestry over the epoch index: first-parent lines, reachable sets, fork points.

This layer answers graph questions about epochs using only the epoch index; it
never reads objects and never touches refs or metric documents.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence

from mvcstore.codec import ObjectId
from mvcstore.errors import ObjectNotFoundError
from mvcstore.stores.base import EpochEntry, EpochIndex

__all__ = [
    "entry",
    "first_parent_line",
    "reachable",
    "fork_point",
    "log_order",
]


def entry(index: EpochIndex, oid: ObjectId) -> EpochEntry:
    """Return the index entry of one epoch.

    Raises:
        ObjectNotFoundError: If the epoch is not indexed.
    """
    found = index.get_many([oid])
    if oid not in found:
        raise ObjectNotFoundError(oid.hex, location="the epoch index")
    return found[oid]


def first_parent_line(index: EpochIndex, head: ObjectId) -> Iterator[EpochEntry]:
    """Yield ``head`` and its first parents, newest first.

    Raises:
        ObjectNotFoundError: If an epoch on the line is not indexed.
    """
    current: ObjectId | None = head
    while current is not None:
        item = entry(index, current)
        yield item
        current = item.parents[0] if item.parents else None


def reachable(index: EpochIndex, heads: Sequence[ObjectId]) -> set[ObjectId]:
    """Return every epoch reachable from ``heads``, heads included."""
    return index.ancestors(list(heads))


def fork_point(index: EpochIndex, a: ObjectId, b: ObjectId) -> ObjectId | None:
    """Return the newest epoch both ``a`` and ``b`` reach (their merge base).

    Of several common ancestors, the one with the highest epoch number wins,
    then the latest commit time.
    """
    common = reachable(index, [a]) & reachable(index, [b])
    if not common:
        return None
    entries = index.get_many(common)
    # without merges the common ancestors form one line: the highest number is newest
    return max(entries.values(), key=lambda e: (e.number, e.time_ns, e.id.raw)).id


def log_order(
    index: EpochIndex, heads: Sequence[ObjectId], *, limit: int | None = None
) -> Iterator[EpochEntry]:
    """Yield epochs reachable from ``heads``, newest first, each once.

    Newest means highest commit time; a child is always yielded before its
    parents as long as clocks did not run backwards, and ties fall back to the
    epoch number.
    """
    seen: set[ObjectId] = set()
    queue: list[tuple[int, int, bytes, EpochEntry]] = []

    def push(oids: Sequence[ObjectId]) -> None:
        fresh = [oid for oid in oids if oid not in seen]
        seen.update(fresh)
        for item in index.get_many(fresh).values():
            heapq.heappush(queue, (-item.time_ns, -item.number, item.id.raw, item))

    push(list(heads))
    count = 0
    while queue and (limit is None or count < limit):
        *_, item = heapq.heappop(queue)
        yield item
        count += 1
        push(list(item.parents))
