"""Text output shared by the commands: ids, times, numbers, ref labels, tables.

Everything here returns strings; printing is left to the commands. Ids show
as their first 12 hex digits, times in UTC as ``YYYY-MM-DDTHH:MM:SSZ``, numbers
with six significant digits.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from mvcstore.codec import ObjectId
from mvcstore.objects import Epoch
from mvcstore.repo import Repo

__all__ = [
    "format_time",
    "format_number",
    "format_summary",
    "ref_labels",
    "epoch_line",
    "table",
    "printable",
]


def printable(text: str) -> str:
    """Return ``text`` with control characters escaped, safe for a terminal."""
    return "".join(
        f"\\x{ord(char):02x}" if ord(char) < 32 or ord(char) == 127 else char
        for char in text
    )


def format_time(time_ns: int) -> str:
    """Return a commit time in UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time_ns // 1_000_000_000))


def format_number(value: float) -> str:
    """Return a metric value with six significant digits (``nan``, ``inf`` kept)."""
    return f"{value:.6g}"


def format_summary(summary: Mapping[str, float]) -> str:
    """Return summary metrics as ``name=value`` pairs, by name."""
    return " ".join(
        f"{name}={format_number(value)}" for name, value in sorted(summary.items())
    )


def ref_labels(repo: Repo) -> dict[ObjectId, list[str]]:
    """Return the ref labels of each epoch that a ref points at.

    The current session reads ``HEAD -> NAME``, other sessions ``NAME`` and
    tags ``tag: NAME``, in that order.
    """
    head = repo.head_session()
    labels: dict[ObjectId, list[str]] = {}
    sessions = sorted(repo.sessions(), key=lambda item: (item[0] != head, item[0]))
    for name, oid in sessions:
        labels.setdefault(oid, []).append(f"HEAD -> {name}" if name == head else name)
    for name, oid in repo.tags():
        labels.setdefault(oid, []).append(f"tag: {name}")
    return labels


def epoch_line(epoch: Epoch, labels: Sequence[str] = ()) -> str:
    """Return the one-line form of an epoch used by ``mvc log``.

    Short id, ref labels, session and number, step, time, summary metrics and
    message, separated by two spaces where present.
    """
    oid = epoch.id.short() if epoch.id is not None else "?" * 12
    head = oid + (f" ({', '.join(labels)})" if labels else "")
    parts = [
        head,
        f"{epoch.session}#{epoch.number}",
        f"step {epoch.step}",
        format_time(epoch.time_ns),
    ]
    if epoch.summary:
        parts.append(format_summary(epoch.summary))
    if epoch.message:
        parts.append(printable(epoch.message.splitlines()[0]))
    return "  ".join(parts)


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Return rows as lines with left-aligned columns, two spaces apart."""
    if not rows:
        return []
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()
        for row in rows
    ]
