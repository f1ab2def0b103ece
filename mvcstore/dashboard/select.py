"""Choosing the best epoch: across sessions' views, optionally per graph.

An epoch's score is the value of one metric at the epoch's last step: the
summary metrics a commit records are logged there, and so is anything the
trainer logged at that step. Scores come from the metrics index in one
look-up per epoch, without reading epoch records; records are read only when
a filter names a hyper-parameter or when epochs are grouped by graph.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from mvcstore import lineage
from mvcstore.codec import ObjectId, Value
from mvcstore.dashboard.compare import GraphFacts, graph_facts
from mvcstore.dashboard.views import Mode
from mvcstore.dashboard.where import Filter, Scalar
from mvcstore.errors import InvalidInputError
from mvcstore.objects import Epoch
from mvcstore.repo import Repo
from mvcstore.stores.base import EpochEntry

__all__ = ["Candidate", "GraphGroup", "Selection", "select_best", "HP_PREFIX"]

HP_PREFIX = "hp."
"""A filter name starting with this reads only the hyper-parameters."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """One epoch and its score.

    Attributes:
        epoch: The epoch's id.
        uid: The uid its documents carry.
        session: The session it was committed on.
        number: Its epoch number.
        step: Its last step, where the score was read.
        value: The score.
        graph: Its graph id (known only when epochs were grouped by graph).
    """

    epoch: ObjectId
    uid: str
    session: str
    number: int
    step: int
    value: float
    graph: ObjectId | None = None

    @property
    def label(self) -> str:
        """``session#number``."""
        return f"{self.session}#{self.number}"


@dataclass(frozen=True, slots=True)
class GraphGroup:
    """The epochs that trained one graph (one pruning stage), ranked as one.

    Attributes:
        graph: The graph id (None: epochs without a graph).
        size: The graph's node and parameter counts.
        epochs: How many candidate epochs trained it.
        sessions: The sessions those epochs were committed on.
        first: The smallest epoch number among them.
        last: The largest.
        best: The group's best epoch.
    """

    graph: ObjectId | None
    size: GraphFacts
    epochs: int
    sessions: tuple[str, ...]
    first: int
    last: int
    best: Candidate


@dataclass(frozen=True, slots=True)
class Selection:
    """The outcome of a best-epoch search.

    Attributes:
        metric: The metric ranked on.
        mode: ``max`` or ``min``.
        revisions: The revisions whose views were searched.
        scored: How many epochs had a score.
        passed: How many of them passed the filter.
        ranking: The passing epochs, best first.
        groups: With grouping by graph: the groups, best first; else empty.
    """

    metric: str
    mode: Mode
    revisions: list[str]
    scored: int
    passed: int
    ranking: list[Candidate]
    groups: list[GraphGroup] = field(default_factory=list)

    @property
    def winner(self) -> Candidate | None:
        """The best epoch, or None when no epoch passed."""
        return self.ranking[0] if self.ranking else None


def _entries(repo: Repo, revisions: Sequence[str]) -> dict[ObjectId, EpochEntry]:
    heads = [repo.resolve_id(revision) for revision in revisions]
    return repo.index.get_many(lineage.reachable(repo.index, heads))


def _param(params: Mapping[str, Value], path: str) -> Scalar | None:
    """Return a hyper-parameter by dotted path (``pruning_plan.share``)."""
    current: Value = dict(params)
    for part in path.split("."):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    if isinstance(current, bool | int | float | str):
        return current
    return None


class _Scope:
    """The names a filter sees for each epoch: metrics, then hyper-parameters."""

    def __init__(
        self,
        repo: Repo,
        entries: Mapping[ObjectId, EpochEntry],
        where: Filter,
    ) -> None:
        self.repo = repo
        points = {entry.uid: entry.step for entry in entries.values()}
        # metric documents at each epoch's last step: summaries live there
        self.metrics = {
            name: repo.metrics_index.values_at(points, name)
            for name in where.names
            if not name.startswith(HP_PREFIX)
        }
        self.records: dict[ObjectId, Epoch] = {}
        unknown = [
            name
            for name in sorted(where.names)
            if not self.metrics.get(name) and not self._any_param(entries, name)
        ]
        if unknown:
            raise InvalidInputError(
                f"where expression names {unknown[0]!r}, which is neither a metric"
                " nor a hyper-parameter of any epoch searched",
                hint="run 'mvc metrics --summary' or 'mvc show REV' to see the names",
            )

    def _record(self, oid: ObjectId) -> Epoch:
        if oid not in self.records:
            self.records[oid] = self.repo.read_epoch(oid)
        return self.records[oid]

    def _any_param(self, entries: Mapping[ObjectId, EpochEntry], name: str) -> bool:
        path = name.removeprefix(HP_PREFIX)
        return any(
            _param(self._record(oid).params, path) is not None for oid in entries
        )

    def lookup(self, entry: EpochEntry, name: str) -> Scalar | None:
        if not name.startswith(HP_PREFIX):
            value = self.metrics.get(name, {}).get(entry.uid)
            if value is not None and not math.isnan(value):
                return value
        return _param(self._record(entry.id).params, name.removeprefix(HP_PREFIX))


def _passes(where: Filter, scope: _Scope, entry: EpochEntry) -> bool:
    return where.matches(lambda name: scope.lookup(entry, name))


def select_best(
    repo: Repo,
    revisions: Sequence[str] | None,
    *,
    metric: str,
    mode: Mode = "max",
    where: Filter | None = None,
    per_graph: bool = False,
) -> Selection:
    """Rank the epochs of some views by one metric and return the best.

    Args:
        repo: The repository.
        revisions: Whose views to search; None searches every session and tag.
        metric: The metric, read at each epoch's last step.
        mode: ``max`` (higher is better) or ``min``.
        where: Only epochs that pass this filter (over metrics at the epoch's
            last step and hyper-parameters).
        per_graph: Also group the epochs by graph id and rank the groups.

    Returns:
        The ranking; ``winner`` is the best epoch. Ties go to the earlier
        epoch (smaller number, then earlier commit).

    Raises:
        InvalidInputError: If ``mode`` is unknown or the filter names nothing
            the epochs hold.
        RevisionNotFoundError: If a revision names no epoch.
    """
    if mode not in ("max", "min"):
        raise InvalidInputError(f"mode {mode!r} is not 'max' or 'min'")
    chosen = list(revisions) if revisions is not None else _all_refs(repo)
    entries = _entries(repo, chosen) if chosen else {}
    points = {entry.uid: entry.step for entry in entries.values()}
    scores = repo.metrics_index.values_at(points, metric) if points else {}

    scored = [
        entry
        for entry in entries.values()
        if entry.uid in scores and not math.isnan(scores[entry.uid])
    ]
    passing = scored
    scope: _Scope | None = None
    if where is not None and scored:
        scope = _Scope(repo, {entry.id: entry for entry in scored}, where)
        passing = [entry for entry in scored if _passes(where, scope, entry)]

    graphs: dict[ObjectId, ObjectId | None] = {}
    if per_graph:
        for entry in passing:
            record = scope.records.get(entry.id) if scope else None
            graphs[entry.id] = (record or repo.read_epoch(entry.id)).graph
    sign = -1.0 if mode == "max" else 1.0
    ranking = sorted(
        (
            Candidate(
                epoch=entry.id,
                uid=entry.uid,
                session=entry.session,
                number=entry.number,
                step=entry.step,
                value=scores[entry.uid],
                graph=graphs.get(entry.id),
            )
            for entry in passing
        ),
        key=lambda c: (sign * c.value, c.number, entries[c.epoch].time_ns, c.epoch.raw),
    )
    return Selection(
        metric=metric,
        mode=mode,
        revisions=chosen,
        scored=len(scored),
        passed=len(passing),
        ranking=ranking,
        groups=_groups(repo, ranking) if per_graph else [],
    )


def _all_refs(repo: Repo) -> list[str]:
    names = [name for name, _ in repo.sessions()]
    names += [name for name, _ in repo.tags() if name not in names]
    return names


def _groups(repo: Repo, ranking: Sequence[Candidate]) -> list[GraphGroup]:
    members: dict[ObjectId | None, list[Candidate]] = {}
    for candidate in ranking:
        members.setdefault(candidate.graph, []).append(candidate)
    groups: list[GraphGroup] = []
    for graph, items in members.items():
        # the ranking is best first, so each group's first member is its best
        best = items[0]
        groups.append(
            GraphGroup(
                graph=graph,
                size=graph_facts(repo, repo.read_epoch(best.epoch)),
                epochs=len(items),
                sessions=tuple(sorted({item.session for item in items})),
                first=min(item.number for item in items),
                last=max(item.number for item in items),
                best=best,
            )
        )
    order = {candidate.epoch: index for index, candidate in enumerate(ranking)}
    return sorted(groups, key=lambda group: order[group.best.epoch])
