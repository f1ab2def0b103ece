"""The typed objects: blob, tensor, state, graph and epoch.

This layer owns what each object kind holds and how it maps to the canonical
encoding: field names, types and their checks. Objects are frozen; encoding one
gives its canonical bytes and its id. It does not store anything and does not
know about refs, sessions or metric documents.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Final, TypeAlias, cast

import msgpack

from mvcstore.codec import ObjectId, Value, decode, encode, hash_object
from mvcstore.errors import CorruptObjectError, InvalidInputError

__all__ = [
    "DTYPES",
    "dtype_size",
    "Blob",
    "Tensor",
    "State",
    "Node",
    "Graph",
    "Epoch",
    "StoredObject",
    "encode_object",
    "decode_object",
    "object_id",
    "children_of",
]

DTYPES: Final[dict[str, int]] = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "U16": 2,
    "I16": 2,
    "U32": 4,
    "I32": 4,
    "U64": 8,
    "I64": 8,
    "F16": 2,
    "BF16": 2,
    "F32": 4,
    "F64": 8,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "C64": 8,
    "C128": 16,
}
"""Tensor element types (safetensors names) and their size in bytes."""

_MAX_RANK: Final = 64


def dtype_size(dtype: str) -> int:
    """Return the size in bytes of one element of ``dtype``.

    Raises:
        InvalidInputError: If ``dtype`` is not one of ``DTYPES``.
    """
    size = DTYPES.get(dtype)
    if size is None:
        raise InvalidInputError(
            f"unknown tensor dtype {dtype!r}",
            hint=f"use one of {', '.join(DTYPES)}",
        )
    return size


@dataclass(frozen=True, slots=True)
class Blob:
    """Raw bytes, such as the data of one tensor.

    Attributes:
        data: The bytes.
    """

    kind: ClassVar[str] = "blob"
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor: element type, shape and the blob holding its data.

    The data is little-endian and C-contiguous (row-major); ``BOOL`` uses one
    byte per element, 0 or 1.

    Attributes:
        dtype: One of ``DTYPES``.
        shape: The size of each dimension.
        data: The id of the blob holding ``nbytes`` bytes of data.
        nbytes: The data size, ``prod(shape) * dtype_size(dtype)``.
    """

    kind: ClassVar[str] = "tensor"
    dtype: str = "F32"
    shape: tuple[int, ...] = ()
    data: ObjectId = field(default_factory=lambda: ObjectId(bytes(32)))
    nbytes: int = 0

    def __post_init__(self) -> None:
        size = dtype_size(self.dtype)
        if len(self.shape) > _MAX_RANK:
            raise InvalidInputError(f"tensor rank {len(self.shape)} is above 64")
        if any(not isinstance(dim, int) or dim < 0 for dim in self.shape):
            raise InvalidInputError(f"tensor shape {self.shape} is not all sizes >= 0")
        expected = math.prod(self.shape) * size
        if self.nbytes != expected:
            raise InvalidInputError(
                f"tensor of {self.dtype} {list(self.shape)} needs {expected} bytes,"
                f" got {self.nbytes}"
            )

    @property
    def numel(self) -> int:
        """The number of elements."""
        return math.prod(self.shape)


@dataclass(frozen=True, slots=True)
class State:
    """A named set of tensors: a model's weights, an optimizer's state.

    Attributes:
        tensors: Tensor name to tensor id.
    """

    kind: ClassVar[str] = "state"
    tensors: Mapping[str, ObjectId] = field(default_factory=dict)


NodeData: TypeAlias = Mapping[str, Value]


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a model graph, in the seed's ModelGraph shape.

    Attributes:
        id: The node's id, unique in its graph.
        name: A display name.
        data: What rebuilding the layer needs (class, arguments, shapes).
        inputs: Connections into the node.
        outputs: Connections out of the node.
        pruning_plan_id: The pruning plan in force on this node, if any.
        wrapper: A wrapper around the layer (such as a pruning
            re-parametrisation), if any.
    """

    id: str
    name: str = ""
    data: NodeData = field(default_factory=dict)
    inputs: NodeData = field(default_factory=dict)
    outputs: NodeData = field(default_factory=dict)
    pruning_plan_id: str | None = None
    wrapper: NodeData | None = None

    def to_value(self) -> dict[str, Value]:
        """Return the node as a plain tree, omitting unset optional fields."""
        out: dict[str, Value] = {
            "id": self.id,
            "name": self.name,
            "data": dict(self.data),
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
        }
        if self.pruning_plan_id is not None:
            out["pruning_plan_id"] = self.pruning_plan_id
        if self.wrapper is not None:
            out["wrapper"] = dict(self.wrapper)
        return out

    @classmethod
    def from_value(cls, value: object) -> Node:
        """Build a node from a plain tree, such as parsed JSON.

        Raises:
            InvalidInputError: If a field is missing or has the wrong type.
        """
        if not isinstance(value, Mapping):
            raise InvalidInputError("a graph node must be an object")
        unknown = set(value) - {
            "id",
            "name",
            "data",
            "inputs",
            "outputs",
            "pruning_plan_id",
            "wrapper",
        }
        if unknown:
            raise InvalidInputError(
                f"graph node has unknown fields: {', '.join(sorted(unknown))}"
            )
        node_id = value.get("id")
        if not isinstance(node_id, str) or not node_id:
            raise InvalidInputError("a graph node needs a non-empty string 'id'")
        name = value.get("name", node_id)
        plan = value.get("pruning_plan_id")
        wrapper = value.get("wrapper")
        if not isinstance(name, str):
            raise InvalidInputError(f"node {node_id!r}: 'name' must be a string")
        if plan is not None and not isinstance(plan, str):
            raise InvalidInputError(
                f"node {node_id!r}: 'pruning_plan_id' must be a string"
            )
        if wrapper is not None and not isinstance(wrapper, Mapping):
            raise InvalidInputError(f"node {node_id!r}: 'wrapper' must be an object")
        parts: dict[str, NodeData] = {}
        for key in ("data", "inputs", "outputs"):
            part = value.get(key, {})
            if not isinstance(part, Mapping):
                raise InvalidInputError(f"node {node_id!r}: {key!r} must be an object")
            parts[key] = cast(NodeData, part)
        return cls(
            id=node_id,
            name=name,
            data=parts["data"],
            inputs=parts["inputs"],
            outputs=parts["outputs"],
            pruning_plan_id=plan,
            wrapper=cast(NodeData | None, wrapper),
        )


@dataclass(frozen=True, slots=True)
class Graph:
    """A model graph: nodes by id, plus free-form metadata.

    Attributes:
        nodes: Node id to node.
        meta: Graph-level facts (framework, input shapes, capture method).
    """

    kind: ClassVar[str] = "graph"
    nodes: Mapping[str, Node] = field(default_factory=dict)
    meta: Mapping[str, Value] = field(default_factory=dict)

    def to_value(self) -> dict[str, Value]:
        """Return the graph as a plain tree (the JSON form of ``graph.json``)."""
        return {
            "nodes": {key: node.to_value() for key, node in self.nodes.items()},
            "meta": dict(self.meta),
        }

    @classmethod
    def from_value(cls, value: object) -> Graph:
        """Build a graph from a plain tree, such as parsed JSON.

        ``nodes`` may be an object keyed by node id or a list of nodes.

        Raises:
            InvalidInputError: If the tree is not a graph.
        """
        if not isinstance(value, Mapping) or "nodes" not in value:
            raise InvalidInputError("a graph must be an object with a 'nodes' field")
        unknown = set(value) - {"nodes", "meta", "id"}
        if unknown:
            raise InvalidInputError(
                f"graph has unknown fields: {', '.join(sorted(unknown))}"
            )
        raw_nodes = value["nodes"]
        if isinstance(raw_nodes, Mapping):
            listed = list(raw_nodes.values())
        elif isinstance(raw_nodes, list):
            listed = raw_nodes
        else:
            raise InvalidInputError("graph 'nodes' must be an object or a list")
        nodes: dict[str, Node] = {}
        for raw in listed:
            node = Node.from_value(raw)
            if node.id in nodes:
                raise InvalidInputError(f"graph has node id {node.id!r} twice")
            nodes[node.id] = node
        if isinstance(raw_nodes, Mapping):
            for key, node in zip(raw_nodes, nodes.values(), strict=True):
                if key != node.id:
                    raise InvalidInputError(
                        f"graph node keyed {key!r} has id {node.id!r}"
                    )
        meta = value.get("meta", {})
        if not isinstance(meta, Mapping):
            raise InvalidInputError("graph 'meta' must be an object")
        return cls(nodes=nodes, meta=cast(Mapping[str, Value], meta))


@dataclass(frozen=True, slots=True)
class Epoch:
    """One epoch of training: the commit of the history.

    Attributes:
        parents: The epoch(s) this one continued from; empty for the first.
        state: The id of the weights state.
        graph: The id of the model graph, if one was recorded.
        extra: Other states by role (``optimizer``, ``scheduler``, ``rng``).
        params: Hyper-parameters in force.
        number: The epoch number; a fork's numbers continue from its fork point.
        step: The last training step the epoch covers.
        time_ns: Commit time, nanoseconds since 1970 UTC.
        message: Free text.
        summary: Summary metrics (name to number).
        uid: The uid that this epoch's metric documents carry.
        session: The session the epoch was committed on.
        meta: Other facts (such as whether a resume is exact).
    """

    kind: ClassVar[str] = "epoch"
    parents: tuple[ObjectId, ...] = ()
    state: ObjectId | None = None
    graph: ObjectId | None = None
    extra: Mapping[str, ObjectId] = field(default_factory=dict)
    params: Mapping[str, Value] = field(default_factory=dict)
    number: int = 1
    step: int = 0
    time_ns: int = 0
    message: str = ""
    summary: Mapping[str, float] = field(default_factory=dict)
    uid: str = ""
    session: str = ""
    meta: Mapping[str, Value] = field(default_factory=dict)
    id: ObjectId | None = field(default=None, compare=False)
    """The epoch's own id, filled in when read from a store; never hashed."""

    @property
    def parent(self) -> ObjectId | None:
        """The first parent, or None for a root epoch."""
        return self.parents[0] if self.parents else None


StoredObject: TypeAlias = Blob | Tensor | State | Graph | Epoch


def _opt(oid: ObjectId | None) -> bytes | None:
    return oid.raw if oid is not None else None


def _to_value(obj: StoredObject) -> Value:
    if isinstance(obj, Tensor):
        return {
            "dtype": obj.dtype,
            "shape": list(obj.shape),
            "data": obj.data.raw,
            "nbytes": obj.nbytes,
        }
    if isinstance(obj, State):
        return {"tensors": {name: oid.raw for name, oid in obj.tensors.items()}}
    if isinstance(obj, Graph):
        return obj.to_value()
    if isinstance(obj, Epoch):
        return {
            "parents": [oid.raw for oid in obj.parents],
            "state": _opt(obj.state),
            "graph": _opt(obj.graph),
            "extra": {role: oid.raw for role, oid in obj.extra.items()},
            "params": dict(obj.params),
            "number": obj.number,
            "step": obj.step,
            "time_ns": obj.time_ns,
            "message": obj.message,
            "summary": {name: float(value) for name, value in obj.summary.items()},
            "uid": obj.uid,
            "session": obj.session,
            "meta": dict(obj.meta),
        }
    raise InvalidInputError(f"cannot encode {type(obj).__name__}")


def encode_object(obj: StoredObject) -> bytes:
    """Return the canonical bytes of ``obj`` (a blob's are its data).

    Raises:
        InvalidInputError: If a field cannot be encoded.
    """
    if isinstance(obj, Blob):
        return obj.data
    if (
        isinstance(obj, Tensor)
        and all(type(n) is int for n in obj.shape)
        and obj.nbytes < 1 << 64
    ):
        # a commit writes one per tensor: its fields are already canonical, in
        # key order, so msgpack takes them as they are
        packed: bytes = msgpack.packb(
            {
                "data": obj.data.raw,
                "dtype": obj.dtype,
                "nbytes": obj.nbytes,
                "shape": list(obj.shape),
            },
            use_bin_type=True,
        )
        return packed
    return encode(_to_value(obj))


def object_id(obj: StoredObject) -> ObjectId:
    """Return the id of ``obj``.

    Raises:
        InvalidInputError: If a field cannot be encoded.
    """
    return hash_object(obj.kind, encode_object(obj))


class _Reader:
    """Typed field access over a decoded map, raising CorruptObjectError."""

    def __init__(self, kind: str, value: Value, oid: ObjectId | None) -> None:
        self.name = oid.hex if oid else None
        self.kind = kind
        if not isinstance(value, dict):
            raise self.error("not a map")
        self.value: dict[str, Value] = value

    def error(self, reason: str) -> CorruptObjectError:
        return CorruptObjectError(self.name, f"{self.kind}: {reason}")

    def get(self, key: str, types: type | tuple[type, ...]) -> Value:
        if key not in self.value:
            raise self.error(f"field {key!r} is missing")
        item = self.value[key]
        if not isinstance(item, types) or (
            isinstance(item, bool) and bool not in _as_tuple(types)
        ):
            raise self.error(f"field {key!r} has type {type(item).__name__}")
        return item

    def get_id(self, key: str, *, optional: bool = False) -> ObjectId | None:
        item = self.get(key, (bytes, type(None)) if optional else bytes)
        return self.as_id(key, item)

    def as_id(self, key: str, item: Value) -> ObjectId | None:
        if item is None:
            return None
        if not isinstance(item, bytes) or len(item) != 32:
            raise self.error(f"field {key!r} is not a 32-byte id")
        return ObjectId(item)

    def get_map(self, key: str) -> dict[str, Value]:
        return cast(dict[str, Value], self.get(key, dict))

    def get_id_map(self, key: str) -> dict[str, ObjectId]:
        out: dict[str, ObjectId] = {}
        for name, item in self.get_map(key).items():
            oid = self.as_id(key, item)
            if oid is None:
                raise self.error(f"field {key!r} holds a null id")
            out[name] = oid
        return out

    def check_fields(self, expected: set[str]) -> None:
        extra = set(self.value) - expected
        if extra:
            raise self.error(f"unknown fields {sorted(extra)}")


def _as_tuple(types: type | tuple[type, ...]) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def decode_object(
    kind: str, payload: bytes, *, oid: ObjectId | None = None
) -> StoredObject:
    """Build the typed object from its kind and canonical bytes.

    Args:
        kind: The object kind from the stored frame.
        payload: The canonical bytes.
        oid: The object's id, named in errors.

    Returns:
        The object.

    Raises:
        CorruptObjectError: If the bytes do not describe a valid object of that
            kind.
    """
    if kind == "blob":
        return Blob(data=payload)
    reader = _Reader(kind, decode(payload, object_id=oid), oid)
    try:
        return _decode_fields(kind, reader)
    except InvalidInputError as exc:
        raise reader.error(exc.message) from exc


def _decode_fields(kind: str, reader: _Reader) -> StoredObject:
    if kind == "tensor":
        reader.check_fields({"dtype", "shape", "data", "nbytes"})
        shape = reader.get("shape", list)
        if not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in shape):  # type: ignore[union-attr]
            raise reader.error("shape holds a non-integer")
        data = reader.get_id("data")
        if data is None:
            raise reader.error("field 'data' is null")
        return Tensor(
            dtype=cast(str, reader.get("dtype", str)),
            shape=tuple(cast(list[int], shape)),
            data=data,
            nbytes=cast(int, reader.get("nbytes", int)),
        )
    if kind == "state":
        reader.check_fields({"tensors"})
        return State(tensors=reader.get_id_map("tensors"))
    if kind == "graph":
        return Graph.from_value(reader.value)
    if kind == "epoch":
        return _decode_epoch(reader)
    raise reader.error("unknown kind")


def _decode_epoch(reader: _Reader) -> Epoch:
    reader.check_fields(
        {
            "parents",
            "state",
            "graph",
            "extra",
            "params",
            "number",
            "step",
            "time_ns",
            "message",
            "summary",
            "uid",
            "session",
            "meta",
        }
    )
    parents: list[ObjectId] = []
    for item in cast(list[Value], reader.get("parents", list)):
        oid = reader.as_id("parents", item)
        if oid is None:
            raise reader.error("field 'parents' holds a null id")
        parents.append(oid)
    summary: dict[str, float] = {}
    for name, value in reader.get_map("summary").items():
        if not isinstance(value, float):
            raise reader.error(f"summary {name!r} is not a float")
        summary[name] = value
    return Epoch(
        parents=tuple(parents),
        state=reader.get_id("state", optional=True),
        graph=reader.get_id("graph", optional=True),
        extra=reader.get_id_map("extra"),
        params=reader.get_map("params"),
        number=cast(int, reader.get("number", int)),
        step=cast(int, reader.get("step", int)),
        time_ns=cast(int, reader.get("time_ns", int)),
        message=cast(str, reader.get("message", str)),
        summary=summary,
        uid=cast(str, reader.get("uid", str)),
        session=cast(str, reader.get("session", str)),
        meta=reader.get_map("meta"),
    )


def children_of(obj: StoredObject) -> Sequence[ObjectId]:
    """Return the ids an object refers to (for fsck, gc and transfer).

    Parents of an epoch are included: they are epochs, not owned objects.
    """
    if isinstance(obj, Tensor):
        return [obj.data]
    if isinstance(obj, State):
        return list(obj.tensors.values())
    if isinstance(obj, Epoch):
        out = list(obj.parents)
        out.extend(oid for oid in (obj.state, obj.graph) if oid is not None)
        out.extend(obj.extra.values())
        return out
    return []
