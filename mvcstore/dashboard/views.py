"""Metric views by lineage: the series, latest and best values a revision sees.

A view is every metric document whose epoch is reachable from a revision, plus
the documents of a session's live epoch in progress. This module narrows views
by metric name, step range and epoch range (epoch numbers on the revision's
line) and summarises them; it reads the epoch index and the metrics index only,
never an object, so it answers as fast for a lineage of a hundred thousand
epochs as the indexes do. Documents stream: nothing here holds a whole view.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

from mvcstore import lineage
from mvcstore.codec import ObjectId
from mvcstore.errors import InvalidInputError, RevisionNotFoundError
from mvcstore.metrics.base import MetricDoc, MetricStats
from mvcstore.repo import Repo

__all__ = [
    "Mode",
    "StepRange",
    "ViewEpoch",
    "View",
    "Point",
    "MetricSummary",
    "open_view",
    "series",
    "summarize",
    "parse_range",
]

Mode = Literal["min", "max"]
StepRange = tuple[int | None, int | None]
"""An inclusive range; None leaves that end open."""


@dataclass(frozen=True, slots=True)
class ViewEpoch:
    """One epoch of a view.

    Attributes:
        uid: The uid its metric documents carry.
        id: The epoch's id, or None for the live epoch in progress.
        number: Its epoch number (the live epoch: one past its base).
        step: Its last step (the live epoch: its base's).
        session: The session it was committed on (or is open on).
        parents: Its parents' ids.
        time_ns: Its commit time (the live epoch: when it was opened).
    """

    uid: str
    id: ObjectId | None
    number: int
    step: int
    session: str
    parents: tuple[ObjectId, ...]
    time_ns: int

    @property
    def is_open(self) -> bool:
        """Whether this is a live epoch that is not committed yet."""
        return self.id is None

    @property
    def label(self) -> str:
        """``session#number``, with ``(open)`` for the live epoch."""
        return f"{self.session}#{self.number}" + (" (open)" if self.is_open else "")


@dataclass(frozen=True, slots=True)
class View:
    """The epochs whose metric documents a revision sees.

    Attributes:
        revision: The revision as given.
        head: The epoch it resolves to, or None for a session with no epoch.
        session: The session when the revision names one (its live epoch is
            part of the view), else None.
        epochs: The epochs by uid.
    """

    revision: str
    head: ObjectId | None
    session: str | None
    epochs: dict[str, ViewEpoch]

    def uids(self, epochs: StepRange | None = None) -> set[str]:
        """Return the uids of the view, or of the epochs numbered in ``epochs``."""
        if epochs is None or epochs == (None, None):
            return set(self.epochs)
        low, high = epochs
        return {
            uid
            for uid, item in self.epochs.items()
            if (low is None or item.number >= low)
            and (high is None or item.number <= high)
        }

    def line(self) -> list[ViewEpoch]:
        """Return the view's epochs oldest first (the live epoch last)."""
        return sorted(
            self.epochs.values(),
            key=lambda e: (e.is_open, e.number, e.time_ns, e.uid),
        )

    def epoch(self, uid: str) -> ViewEpoch | None:
        """Return the epoch whose documents carry ``uid``, if it is in the view."""
        return self.epochs.get(uid)


@dataclass(frozen=True, slots=True)
class Point:
    """One metric value and where it comes from.

    Attributes:
        name: The metric.
        step: Its step.
        value: Its value.
        uid: The uid of the epoch that logged it.
        number: That epoch's number (None if it left the view meanwhile).
        epoch: That epoch's id; None for the live epoch.
    """

    name: str
    step: int
    value: float
    uid: str
    number: int | None
    epoch: ObjectId | None


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One metric over a view: how many values, the latest and both extremes.

    Attributes:
        name: The metric.
        count: How many documents.
        first_step: The smallest step.
        latest: The value at the largest step.
        min: The smallest value (earliest step on ties; NaN ignored).
        max: The largest value (earliest step on ties; NaN ignored).
    """

    name: str
    count: int
    first_step: int
    latest: Point
    min: Point
    max: Point

    def best(self, mode: Mode) -> Point:
        """Return the best value: the min or the max."""
        return self.min if mode == "min" else self.max


def parse_range(text: str | None, *, what: str) -> StepRange:
    """Parse ``A:B``, ``A:``, ``:B`` or ``A`` into an inclusive range.

    Args:
        text: The range as typed; None for no range.
        what: What it ranges over (``steps``, ``epochs``), for messages.

    Raises:
        InvalidInputError: If it is not one of those forms of integers >= 0,
            or its start is after its end.
    """
    if text is None:
        return (None, None)
    low_text, sep, high_text = text.partition(":")
    if not sep:
        high_text = low_text
    try:
        low = int(low_text) if low_text.strip() else None
        high = int(high_text) if high_text.strip() else None
    except ValueError as exc:
        raise InvalidInputError(
            f"{what} range {text!r} is not of the form A:B",
            hint=f"give {what} as A:B, A: or :B with integers, e.g. 10:20",
        ) from exc
    if (low is not None and low < 0) or (high is not None and high < 0):
        raise InvalidInputError(f"{what} range {text!r} holds a negative number")
    if low is not None and high is not None and low > high:
        raise InvalidInputError(
            f"{what} range {text!r} starts after it ends",
            hint=f"give the smaller bound first, e.g. {high}:{low}",
        )
    return (low, high)


def open_view(repo: Repo, revision: str | None = None) -> View:
    """Return the epochs of ``revision``'s view (HEAD when None).

    Raises:
        RevisionNotFoundError: If the revision names no epoch and no session.
    """
    rev = revision or "HEAD"
    session = _session_name(repo, rev)
    try:
        head: ObjectId | None = repo.resolve_id(rev)
    except RevisionNotFoundError:
        # a session with no epoch yet still has a view: its live epoch
        if session is None:
            raise
        head = None
    epochs: dict[str, ViewEpoch] = {}
    base_number, base_step = 0, 0
    if head is not None:
        reach = lineage.reachable(repo.index, [head])
        for entry in repo.index.get_many(reach).values():
            epochs[entry.uid] = ViewEpoch(
                uid=entry.uid,
                id=entry.id,
                number=entry.number,
                step=entry.step,
                session=entry.session,
                parents=entry.parents,
                time_ns=entry.time_ns,
            )
        head_entry = lineage.entry(repo.index, head)
        base_number, base_step = head_entry.number, head_entry.step
    live = [
        item
        for item in repo.refs.iter_open_epochs()
        if session is not None and item.session == session and item.base == head
    ]
    # the repository decides which live epochs still have a writer; asked only
    # when there are some, since it walks the lineage again
    alive = repo.view_uids(rev) if live else set()
    for item in live:
        if item.uid in alive and item.uid not in epochs:
            epochs[item.uid] = ViewEpoch(
                uid=item.uid,
                id=None,
                number=base_number + 1,
                step=base_step,
                session=item.session,
                parents=(head,) if head is not None else (),
                time_ns=item.started_ns,
            )
    return View(revision=rev, head=head, session=session, epochs=epochs)


def _session_name(repo: Repo, revision: str) -> str | None:
    current = repo.head_session()
    if revision == "HEAD":
        return current
    if revision == current or any(name == revision for name, _ in repo.sessions()):
        return revision
    return None


def series(
    repo: Repo,
    revision: str | None = None,
    *,
    names: Sequence[str] | None = None,
    steps: StepRange = (None, None),
    epochs: StepRange = (None, None),
    view: View | None = None,
) -> Iterator[MetricDoc]:
    """Yield the documents of a view, by step then name, streaming.

    Args:
        repo: The repository.
        revision: Whose view (HEAD when None).
        names: Only these metrics.
        steps: Only documents whose step is in this inclusive range.
        epochs: Only documents of epochs numbered in this inclusive range on
            the revision's line (the live epoch is one past the head).
        view: A view already opened for ``revision``.

    Raises:
        RevisionNotFoundError: If the revision names nothing.
    """
    chosen = view or open_view(repo, revision)
    uids = chosen.uids(epochs)
    if not uids:
        return
    yield from repo.metrics_index.query(
        uids, names=names, min_step=steps[0], max_step=steps[1]
    )


def summarize(
    repo: Repo,
    revision: str | None = None,
    *,
    names: Sequence[str] | None = None,
    steps: StepRange = (None, None),
    epochs: StepRange = (None, None),
    view: View | None = None,
) -> dict[str, MetricSummary]:
    """Return count, latest, min and max of each metric in a view, with epochs.

    The aggregates are computed by the metrics index; each reported value is
    then traced back to the epoch that logged it with one narrow query.

    Args:
        repo: The repository.
        revision: Whose view (HEAD when None).
        names: Only these metrics (all when None).
        steps: Only documents whose step is in this inclusive range.
        epochs: Only documents of epochs numbered in this range.
        view: A view already opened for ``revision``.

    Returns:
        The summaries by metric name, in name order.
    """
    chosen = view or open_view(repo, revision)
    uids = chosen.uids(epochs)
    if not uids:
        return {}
    stats = repo.metrics_index.stats(
        uids, names=names, min_step=steps[0], max_step=steps[1]
    )
    return {name: _summary(repo, chosen, uids, item) for name, item in stats.items()}


def _summary(
    repo: Repo, view: View, uids: set[str], item: MetricStats
) -> MetricSummary:
    return MetricSummary(
        name=item.name,
        count=item.count,
        first_step=item.first_step,
        latest=_locate(repo, view, uids, item.name, item.last_step, item.last),
        min=_locate(repo, view, uids, item.name, item.min_step, item.min),
        max=_locate(repo, view, uids, item.name, item.max_step, item.max),
    )


def _locate(
    repo: Repo, view: View, uids: set[str], name: str, step: int, value: float
) -> Point:
    """Return the document of ``name`` at ``step`` holding ``value`` as a point."""
    found: MetricDoc | None = None
    for doc in repo.metrics_index.query(
        uids, names=[name], min_step=step, max_step=step
    ):
        if found is None or doc.same_value(value):
            found = doc
            if doc.same_value(value):
                break
    if found is None:
        return Point(name, step, value, "", None, None)
    epoch = view.epoch(found.uid)
    return Point(
        name=name,
        step=step,
        value=value if not math.isnan(value) else found.value,
        uid=found.uid,
        number=epoch.number if epoch else None,
        epoch=epoch.id if epoch else None,
    )
