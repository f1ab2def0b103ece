"""Differences between two epochs: their graphs and their weights.

This module compares what two epochs recorded, through the ``Repo`` API: the
nodes of their graphs (added, removed, changed, with the old and new shape of
each parameter and buffer that changed) and the tensors of their states
(added, removed, reshaped, changed). A tensor whose id is the same in both
states is unchanged without reading its data; only tensors of the same shape
and another id are read, to measure their relative L2 change in float64.
It never imports torch and never prints.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final, cast

import numpy as np
import numpy.typing as npt

from mvcstore.arrays import RawTensor, to_numpy
from mvcstore.codec import ObjectId
from mvcstore.errors import CorruptObjectError
from mvcstore.objects import Epoch, Graph, Node, State, Tensor

if TYPE_CHECKING:
    from mvcstore.repo import Repo

__all__ = [
    "Shape",
    "NodeChange",
    "TensorChange",
    "EpochDiff",
    "diff_epochs",
    "relative_l2",
]

Shape = tuple[int, ...]

_CHUNK: Final = 1 << 20
"""Elements converted to float64 at a time, so memory stays bounded."""
_NODE_FIELDS: Final = ("name", "inputs", "outputs", "wrapper", "pruning_plan_id")


@dataclass(frozen=True, slots=True)
class NodeChange:
    """One graph node that differs between two epochs.

    Attributes:
        node: The node id (a module path for captured torch graphs).
        change: ``added``, ``removed`` or ``changed``.
        old_class: The node's ``data["class"]`` in the old graph, if any.
        new_class: The node's ``data["class"]`` in the new graph, if any.
        shapes: Each parameter or buffer whose shape differs (or that exists on
            one side only) with its old and new shape; None where absent.
        fields: What differs in a changed node: keys of its ``data``
            (``args``, ``params``, ...) and node fields (``wrapper``,
            ``pruning_plan_id``, ``inputs``, ``outputs``).
    """

    node: str
    change: str
    old_class: str | None
    new_class: str | None
    shapes: Mapping[str, tuple[Shape | None, Shape | None]]
    fields: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TensorChange:
    """One tensor that differs between two states.

    Attributes:
        name: The tensor's name in the state.
        change: ``added``, ``removed``, ``reshaped`` or ``changed``.
        old_shape: Its shape in the old state, if there.
        new_shape: Its shape in the new state, if there.
        old_dtype: Its dtype in the old state, if there.
        new_dtype: Its dtype in the new state, if there.
        relative_l2: For ``changed``: ``||new - old|| / ||old||``, computed in
            float64 (``inf`` when the old tensor is all zeros).
    """

    name: str
    change: str
    old_shape: Shape | None = None
    new_shape: Shape | None = None
    old_dtype: str | None = None
    new_dtype: str | None = None
    relative_l2: float | None = None


@dataclass(frozen=True, slots=True)
class EpochDiff:
    """What changed from one epoch to another.

    Attributes:
        old: The first epoch.
        new: The second epoch.
        nodes: Graph nodes added, removed or changed, by node id.
        tensors: Tensors added, removed, reshaped or changed, by name.
        unchanged: How many tensors are the same in both states.
        params_before: Parameter count of the old epoch.
        params_after: Parameter count of the new epoch.
    """

    old: Epoch
    new: Epoch
    nodes: tuple[NodeChange, ...]
    tensors: tuple[TensorChange, ...]
    unchanged: int
    params_before: int
    params_after: int

    def nodes_of(self, change: str) -> list[NodeChange]:
        """Return the node changes of one kind (``added``, ...)."""
        return [node for node in self.nodes if node.change == change]

    def tensors_of(self, change: str) -> list[TensorChange]:
        """Return the tensor changes of one kind (``added``, ...)."""
        return [tensor for tensor in self.tensors if tensor.change == change]

    def to_json(self) -> dict[str, object]:
        """Return the difference as JSON-ready data (ids as hex)."""

        def side(epoch: Epoch) -> dict[str, object]:
            return {
                "epoch": epoch.id.hex if epoch.id else None,
                "session": epoch.session,
                "number": epoch.number,
                "graph": epoch.graph.hex if epoch.graph else None,
                "state": epoch.state.hex if epoch.state else None,
            }

        def shape(value: Shape | None) -> list[int] | None:
            return list(value) if value is not None else None

        return {
            "old": side(self.old),
            "new": side(self.new),
            "graph": {
                "same": self.old.graph == self.new.graph,
                "nodes": [
                    {
                        "node": node.node,
                        "change": node.change,
                        "old_class": node.old_class,
                        "new_class": node.new_class,
                        "fields": list(node.fields),
                        "shapes": {
                            name: [shape(old), shape(new)]
                            for name, (old, new) in node.shapes.items()
                        },
                    }
                    for node in self.nodes
                ],
            },
            "weights": {
                "tensors": [
                    {
                        "name": tensor.name,
                        "change": tensor.change,
                        "old_shape": shape(tensor.old_shape),
                        "new_shape": shape(tensor.new_shape),
                        "old_dtype": tensor.old_dtype,
                        "new_dtype": tensor.new_dtype,
                        "relative_l2": tensor.relative_l2,
                    }
                    for tensor in self.tensors
                ],
                "unchanged": self.unchanged,
                "params_before": self.params_before,
                "params_after": self.params_after,
            },
        }


# -- graphs ------------------------------------------------------------------


def _tensor_shapes(node: Node) -> dict[str, Shape]:
    """Return the shape of each parameter and buffer a node's data lists."""
    found: dict[str, Shape] = {}
    for kind in ("params", "buffers"):
        table = node.data.get(kind)
        if not isinstance(table, Mapping):
            continue
        for name, facts in table.items():
            dims = facts.get("shape") if isinstance(facts, Mapping) else None
            if isinstance(dims, list) and all(isinstance(d, int) for d in dims):
                found[name] = tuple(cast(list[int], dims))
    return found


def _class_of(node: Node | None) -> str | None:
    if node is None:
        return None
    value = node.data.get("class")
    return value if isinstance(value, str) else None


def _changed_fields(old: Node, new: Node) -> tuple[str, ...]:
    fields = [
        key
        for key in sorted(set(old.data) | set(new.data))
        if old.data.get(key) != new.data.get(key)
    ]
    fields.extend(
        name for name in _NODE_FIELDS if getattr(old, name) != getattr(new, name)
    )
    return tuple(fields)


def _diff_graphs(old: Graph | None, new: Graph | None) -> list[NodeChange]:
    old_nodes = dict(old.nodes) if old is not None else {}
    new_nodes = dict(new.nodes) if new is not None else {}
    changes: list[NodeChange] = []
    for node_id in sorted(set(old_nodes) | set(new_nodes)):
        before = old_nodes.get(node_id)
        after = new_nodes.get(node_id)
        if before is not None and after is not None and before == after:
            continue
        old_shapes = _tensor_shapes(before) if before is not None else {}
        new_shapes = _tensor_shapes(after) if after is not None else {}
        shapes = {
            name: (old_shapes.get(name), new_shapes.get(name))
            for name in sorted(set(old_shapes) | set(new_shapes))
            if old_shapes.get(name) != new_shapes.get(name)
        }
        if before is None or after is None:
            changes.append(
                NodeChange(
                    node=node_id,
                    change="added" if before is None else "removed",
                    old_class=_class_of(before),
                    new_class=_class_of(after),
                    shapes=shapes,
                )
            )
            continue
        changes.append(
            NodeChange(
                node=node_id,
                change="changed",
                old_class=_class_of(before),
                new_class=_class_of(after),
                shapes=shapes,
                fields=_changed_fields(before, after),
            )
        )
    return changes


def _graph_params(graph: Graph) -> int | None:
    """Return the parameter count a graph's module nodes list, if they list any."""
    total = 0
    found = False
    for node in graph.nodes.values():
        table = node.data.get("params")
        if node.data.get("op") != "module" or not isinstance(table, Mapping):
            continue
        for facts in table.values():
            dims = facts.get("shape") if isinstance(facts, Mapping) else None
            if isinstance(dims, list):
                found = True
                total += math.prod(cast(list[int], dims))
    return total if found else None


# -- tensors -----------------------------------------------------------------


def _chunks(raw: RawTensor) -> Iterator[npt.NDArray[np.generic]]:
    flat = to_numpy(raw).reshape(-1)
    for start in range(0, max(flat.size, 1), _CHUNK):
        yield flat[start : start + _CHUNK]


def _wide(chunk: npt.NDArray[np.generic]) -> npt.NDArray[np.inexact[Any]]:
    if chunk.dtype.kind == "c":
        return chunk.astype(np.complex128)
    return chunk.astype(np.float64)


def _squared(values: npt.NDArray[np.inexact[Any]]) -> float:
    return float(np.sum(np.abs(values) ** 2)) if values.size else 0.0


def relative_l2(old: RawTensor, new: RawTensor) -> float:
    """Return ``||new - old|| / ||old||`` of two same-shaped tensors, in float64.

    Elements are widened to float64 (complex128 for complex tensors) a chunk
    at a time, so bfloat16 and float8 tensors (read through ``ml_dtypes``)
    and large tensors need no full-size float64 copy.

    Args:
        old: The tensor before.
        new: The tensor after, of the same shape.

    Returns:
        The relative change; 0.0 when both are all zeros, ``inf`` when only
        the old one is, NaN when either holds NaN.
    """
    diff = 0.0
    base = 0.0
    for before, after in zip(_chunks(old), _chunks(new), strict=True):
        wide_before = _wide(before)
        diff += _squared(_wide(after) - wide_before)
        base += _squared(wide_before)
    if base == 0.0:
        return 0.0 if diff == 0.0 else math.inf
    return math.sqrt(diff) / math.sqrt(base)


def _state(repo: Repo, oid: ObjectId | None) -> dict[str, ObjectId]:
    if oid is None:
        return {}
    obj = repo.get(oid)
    if not isinstance(obj, State):
        raise CorruptObjectError(oid.hex, f"expected a state, found a {obj.kind}")
    return dict(obj.tensors)


def _tensor(repo: Repo, oid: ObjectId) -> Tensor:
    obj = repo.get(oid)
    if not isinstance(obj, Tensor):
        raise CorruptObjectError(oid.hex, f"expected a tensor, found a {obj.kind}")
    return obj


def _diff_states(
    repo: Repo, old: Epoch, new: Epoch
) -> tuple[list[TensorChange], int, int, int]:
    before = _state(repo, old.state)
    after = _state(repo, new.state)
    tensors: dict[ObjectId, Tensor] = {}

    def record(oid: ObjectId) -> Tensor:
        if oid not in tensors:
            tensors[oid] = _tensor(repo, oid)
        return tensors[oid]

    changes: list[TensorChange] = []
    compare: list[str] = []
    unchanged = 0
    for name in sorted(set(before) | set(after)):
        old_id, new_id = before.get(name), after.get(name)
        if old_id == new_id:
            unchanged += 1
            continue
        old_t = record(old_id) if old_id is not None else None
        new_t = record(new_id) if new_id is not None else None
        if old_t is None or new_t is None:
            kind = "added" if old_t is None else "removed"
        elif old_t.shape != new_t.shape:
            kind = "reshaped"
        else:
            kind = "changed"
            compare.append(name)
        changes.append(
            TensorChange(
                name=name,
                change=kind,
                old_shape=old_t.shape if old_t else None,
                new_shape=new_t.shape if new_t else None,
                old_dtype=old_t.dtype if old_t else None,
                new_dtype=new_t.dtype if new_t else None,
            )
        )

    # only same-shaped tensors with new ids are read, and only from here
    if compare:
        old_raw = repo.read_state(cast(ObjectId, old.state), names=compare)
        new_raw = repo.read_state(cast(ObjectId, new.state), names=compare)
        measured = {name: relative_l2(old_raw[name], new_raw[name]) for name in compare}
        changes = [
            replace(change, relative_l2=measured[change.name])
            if change.name in measured
            else change
            for change in changes
        ]

    old_count = sum(record(oid).numel for oid in before.values())
    new_count = sum(record(oid).numel for oid in after.values())
    return changes, unchanged, old_count, new_count


def diff_epochs(repo: Repo, rev1: str, rev2: str) -> EpochDiff:
    """Compare two epochs' graphs and weights.

    Parameter counts come from the graph (the shapes its module nodes list
    under ``params``, so buffers and pruning masks are not counted) when the
    epoch has such a graph, and from every tensor of the state otherwise.

    Args:
        repo: The repository.
        rev1: The epoch to compare from.
        rev2: The epoch to compare to.

    Returns:
        The difference.

    Raises:
        InvalidInputError: If a revision is malformed.
        RevisionNotFoundError: If a revision names no epoch.
        AmbiguousRevisionError: If a revision names more than one epoch.
        CorruptObjectError: If an object read does not verify.
    """
    old = repo.resolve(rev1)
    new = repo.resolve(rev2)
    old_graph = repo.read_graph(old.graph) if old.graph is not None else None
    new_graph = repo.read_graph(new.graph) if new.graph is not None else None
    nodes = [] if old.graph == new.graph else _diff_graphs(old_graph, new_graph)
    changes, unchanged, old_count, new_count = _diff_states(repo, old, new)
    before = _graph_params(old_graph) if old_graph is not None else None
    after = _graph_params(new_graph) if new_graph is not None else None
    return EpochDiff(
        old=old,
        new=new,
        nodes=tuple(nodes),
        tensors=tuple(changes),
        unchanged=unchanged,
        params_before=before if before is not None else old_count,
        params_after=after if after is not None else new_count,
    )
