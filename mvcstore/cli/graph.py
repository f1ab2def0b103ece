"""Text drawing of epoch lineage, for ``mvc log --graph``.

This module turns a list of epochs (each with its parents, children before
parents) into rows of ASCII art: one column per line of history that is still
waiting for an epoch, ``*`` for an epoch, ``|`` for a line passing by, ``/`` or
a backslash for a line moving one column, ``_`` beneath a line that crosses
others. It knows nothing of repositories; it works on opaque string keys.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["GraphRow", "children_first", "draw_lineage"]


@dataclass(frozen=True, slots=True)
class GraphRow:
    """One row of a drawn lineage.

    Attributes:
        prefix: The drawing for this row, without trailing spaces.
        key: The epoch drawn as ``*`` on this row, or None for a row that only
            connects lines.
    """

    prefix: str
    key: str | None


def children_first(items: Sequence[tuple[str, Sequence[str]]]) -> list[str]:
    """Order keys so that each comes before all of its parents.

    The given order is kept wherever it already satisfies that rule, so a
    newest-first log stays newest first; only epochs whose clock ran backwards
    move down below their children.

    Args:
        items: Keys with their parents' keys, in the preferred order. Parents
            that are not themselves listed are ignored.

    Returns:
        The keys, each before its listed parents.
    """
    position = {key: index for index, (key, _) in enumerate(items)}
    waiting_children = dict.fromkeys(position, 0)
    parents_of: dict[str, list[str]] = {}
    for key, parents in items:
        listed = [p for p in dict.fromkeys(parents) if p in position and p != key]
        parents_of[key] = listed
        for parent in listed:
            waiting_children[parent] += 1

    ready = [
        (position[key], key) for key, count in waiting_children.items() if not count
    ]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, key = heapq.heappop(ready)
        out.append(key)
        for parent in parents_of[key]:
            waiting_children[parent] -= 1
            if not waiting_children[parent]:
                heapq.heappush(ready, (position[parent], parent))

    # a parent cycle cannot come from content-addressed epochs; keep them anyway
    placed = set(out)
    out.extend(key for key, _ in items if key not in placed)
    return out


def draw_lineage(items: Sequence[tuple[str, Sequence[str]]]) -> list[GraphRow]:
    """Draw epochs and their parent links as rows of text.

    Args:
        items: Keys with their parents' keys, each key before its parents (see
            ``children_first``).

    Returns:
        The rows: one per key, with connecting rows where lines fork, join,
        end or shift.
    """
    columns: list[str] = []
    rows: list[GraphRow] = []
    ended: int | None = None  # the column a root just ended, if drawn last
    for key, parents in items:
        if key in columns:
            col = columns.index(key)
        else:
            columns.append(key)
            col = len(columns) - 1
            if col == ended:
                # a new line where a root's line just ended would read as its
                # parent: a row without that column keeps them apart
                rows.append(GraphRow(" ".join("|" for _ in columns[:-1]), None))
        ended = None
        marks = ("*" if index == col else "|" for index in range(len(columns)))
        rows.append(GraphRow(" ".join(marks), key))

        wanted = [parent for parent in dict.fromkeys(parents) if parent != key]
        if not wanted:
            # a root: its line ends and the lines to its right shift left
            moves = [
                (index, index if index < col else index - 1)
                for index in range(len(columns))
                if index != col
            ]
            del columns[col]
            if col < len(columns):
                rows.append(GraphRow(_connector(moves), None))
            else:
                ended = col
            continue

        columns[col] = wanted[0]
        if len(wanted) > 1:
            # an epoch with several parents: new lines branch out to the right
            added = len(wanted) - 1
            moves = [
                (index, index if index <= col else index + added)
                for index in range(len(columns))
            ]
            moves += [(col, col + offset) for offset in range(1, added + 1)]
            columns[col + 1 : col + 1] = wanted[1:]
            rows.append(GraphRow(_connector(moves), None))

        # lines now waiting for the same epoch join the leftmost of them
        kept: list[str] = []
        target: dict[str, int] = {}
        moves = []
        for index, waiting in enumerate(columns):
            if waiting not in target:
                target[waiting] = len(kept)
                kept.append(waiting)
            moves.append((index, target[waiting]))
        if len(kept) < len(columns):
            rows.append(GraphRow(_connector(moves), None))
            columns = kept
    return rows


def _connector(moves: Sequence[tuple[int, int]]) -> str:
    """Draw one row that moves each line from one column to another."""
    width = 2 * max(max(start, end) for start, end in moves) + 1
    chars = [" "] * width

    # underscores first: a line that crosses others passes beneath them
    for start, end in moves:
        if end < start - 1:
            for spot in range(2 * end + 1, 2 * start - 2):
                chars[spot] = "_"
        elif end > start + 1:
            for spot in range(2 * start + 2, 2 * end):
                chars[spot] = "_"
    for start, end in moves:
        if end == start:
            chars[2 * start] = "|"
        elif end < start:
            chars[2 * start - 1] = "/"
        else:
            chars[2 * start + 1] = "\\"
    return "".join(chars).rstrip()
