"""Comparing models: what each revision's line holds, side by side.

For each revision: its head epoch, its fork point with the first revision (the
newest shared ancestor), how many epochs its line holds and how many are its
own, the final and best value of each metric in its view, the parameter count
and node count of its head's graph, and the pruning plans and graph changes
along its line. Reads the epoch records of each line (to follow graphs and
plans); metric values come from the metrics index.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from mvcstore import lineage
from mvcstore.codec import ObjectId, Value
from mvcstore.dashboard.views import MetricSummary, open_view, summarize
from mvcstore.errors import CorruptObjectError, InvalidInputError
from mvcstore.objects import Epoch, Graph, State, Tensor
from mvcstore.repo import Repo

__all__ = [
    "PlanUse",
    "ModelSummary",
    "Comparison",
    "GraphFacts",
    "compare",
    "graph_facts",
    "plan_ids",
    "line_epochs",
]


@dataclass(frozen=True, slots=True)
class PlanUse:
    """A pruning plan in force over consecutive epochs of a line.

    Attributes:
        plan: The plan's id.
        first: The number of the first epoch it was in force for.
        last: The number of the last one.
    """

    plan: str
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class GraphFacts:
    """The size of a model.

    Attributes:
        graph: The graph id, or None when the epoch recorded no graph.
        nodes: The graph's node count (None without a graph).
        params: The parameter count: the sum of the parameter shapes recorded
            on the graph's nodes, or, when the graph records none, of every
            tensor in the epoch's state. None when neither is known.
    """

    graph: ObjectId | None
    nodes: int | None
    params: int | None


@dataclass(frozen=True, slots=True)
class ModelSummary:
    """One model in a comparison.

    Attributes:
        revision: The revision as given.
        head: Its head epoch.
        fork_point: The newest epoch it shares with the first revision (the
            first revision: with the second), or None when they share none.
        epochs: How many epochs its line holds.
        own_epochs: How many of them come after the fork point.
        metrics: The summary of each metric in its view.
        size: Node and parameter counts of the head.
        plans: The pruning plans along its line, oldest first.
        graph_changes: The numbers of the epochs whose graph differs from their
            parent's (each pruning step).
    """

    revision: str
    head: Epoch
    fork_point: Epoch | None
    epochs: int
    own_epochs: int
    metrics: dict[str, MetricSummary]
    size: GraphFacts
    plans: list[PlanUse] = field(default_factory=list)
    graph_changes: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Models side by side.

    Attributes:
        models: One summary per revision, in the order given.
        fork_points: The fork point of every pair (by revision), or None.
    """

    models: list[ModelSummary]
    fork_points: dict[tuple[str, str], Epoch | None]


def line_epochs(repo: Repo, head: ObjectId) -> list[Epoch]:
    """Return the epochs on ``head``'s first-parent line, oldest first."""
    ids = [entry.id for entry in lineage.first_parent_line(repo.index, head)]
    return [repo.read_epoch(oid) for oid in reversed(ids)]


def plan_ids(epoch: Epoch, graph: Graph | None) -> list[str]:
    """Return the pruning plans in force for an epoch, by id.

    A plan is named by ``params["pruning_plan"]`` (a mapping with an ``id``,
    or a string) and by the ``pruning_plan_id`` of the graph's nodes.
    """
    found: list[str] = []
    plan: Value = epoch.params.get("pruning_plan")
    if isinstance(plan, Mapping) and plan.get("id") is not None:
        found.append(str(plan.get("id")))
    elif isinstance(plan, str) and plan:
        found.append(plan)
    if graph is not None:
        found.extend(
            node.pruning_plan_id
            for node in graph.nodes.values()
            if node.pruning_plan_id
        )
    return sorted(set(found))


def graph_facts(repo: Repo, epoch: Epoch) -> GraphFacts:
    """Return the node and parameter counts of an epoch's model."""
    graph = repo.read_graph(epoch.graph) if epoch.graph is not None else None
    params = _graph_params(graph) if graph is not None else None
    if params is None and epoch.state is not None:
        params = _state_params(repo, epoch.state)
    return GraphFacts(
        graph=epoch.graph,
        nodes=len(graph.nodes) if graph is not None else None,
        params=params,
    )


def _graph_params(graph: Graph) -> int | None:
    total = 0
    seen = False
    for node in graph.nodes.values():
        params = node.data.get("params")
        if not isinstance(params, Mapping):
            continue
        for facts in params.values():
            shape = facts.get("shape") if isinstance(facts, Mapping) else None
            if isinstance(shape, list) and all(
                isinstance(dim, int) and not isinstance(dim, bool) for dim in shape
            ):
                total += math.prod(int(str(dim)) for dim in shape)
                seen = True
    return total if seen else None


def _state_params(repo: Repo, oid: ObjectId) -> int:
    state = repo.get(oid)
    if not isinstance(state, State):
        raise CorruptObjectError(oid.hex, f"expected a state, found a {state.kind}")
    total = 0
    for tensor_id in state.tensors.values():
        tensor = repo.get(tensor_id)
        if not isinstance(tensor, Tensor):
            raise CorruptObjectError(
                tensor_id.hex, f"expected a tensor, found a {tensor.kind}"
            )
        total += tensor.numel
    return total


class _Graphs:
    """Graphs read once each."""

    def __init__(self, repo: Repo) -> None:
        self.repo = repo
        self.cache: dict[ObjectId, Graph] = {}

    def get(self, oid: ObjectId | None) -> Graph | None:
        if oid is None:
            return None
        if oid not in self.cache:
            self.cache[oid] = self.repo.read_graph(oid)
        return self.cache[oid]


def _plans(line: Sequence[Epoch], graphs: _Graphs) -> list[PlanUse]:
    uses: list[PlanUse] = []
    running: dict[str, PlanUse] = {}
    for epoch in line:
        current = set(plan_ids(epoch, graphs.get(epoch.graph)))
        for plan in list(running):
            if plan not in current:
                uses.append(running.pop(plan))
        for plan in sorted(current):
            use = running.get(plan)
            running[plan] = PlanUse(
                plan, use.first if use else epoch.number, epoch.number
            )
    uses.extend(running.values())
    return sorted(uses, key=lambda use: (use.first, use.plan))


def _graph_changes(line: Sequence[Epoch]) -> list[int]:
    return [
        child.number
        for parent, child in zip(line, line[1:], strict=False)
        if child.graph != parent.graph
    ]


def compare(
    repo: Repo,
    revisions: Sequence[str],
    *,
    names: Collection[str] | None = None,
) -> Comparison:
    """Compare models: one summary per revision, fork points of every pair.

    Args:
        repo: The repository.
        revisions: Two or more revisions (a session name compares its live
            epoch's documents too).
        names: Only these metrics (all when None).

    Returns:
        The comparison.

    Raises:
        InvalidInputError: If no revision is given.
        RevisionNotFoundError: If a revision names no epoch.
    """
    if not revisions:
        raise InvalidInputError(
            "nothing to compare", hint="name two sessions, e.g. 'mvc compare a b'"
        )
    heads = [repo.resolve_id(revision) for revision in revisions]
    graphs = _Graphs(repo)
    pairs: dict[tuple[str, str], Epoch | None] = {}
    for i, (rev_a, head_a) in enumerate(zip(revisions, heads, strict=True)):
        for rev_b, head_b in list(zip(revisions, heads, strict=True))[i + 1 :]:
            point = lineage.fork_point(repo.index, head_a, head_b)
            pairs[(rev_a, rev_b)] = repo.read_epoch(point) if point else None

    models: list[ModelSummary] = []
    for index, (revision, head) in enumerate(zip(revisions, heads, strict=True)):
        line = line_epochs(repo, head)
        # the first model forks from the second, every other from the first
        if index == 0:
            fork = pairs[(revision, revisions[1])] if len(revisions) > 1 else None
        else:
            fork = pairs[(revisions[0], revision)]
        fork_number = fork.number if fork is not None else 0
        view = open_view(repo, revision)
        models.append(
            ModelSummary(
                revision=revision,
                head=line[-1],
                fork_point=fork,
                epochs=len(line),
                own_epochs=sum(1 for epoch in line if epoch.number > fork_number),
                metrics=summarize(
                    repo, revision, names=list(names or []) or None, view=view
                ),
                size=graph_facts(repo, line[-1]),
                plans=_plans(line, graphs),
                graph_changes=_graph_changes(line),
            )
        )
    return Comparison(models=models, fork_points=pairs)
