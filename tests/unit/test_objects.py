"""The typed objects: fields, checks, encoding and decoding."""

from __future__ import annotations

from dataclasses import replace

import msgpack
import pytest

from mvcstore import codec
from mvcstore.codec import ObjectId
from mvcstore.errors import CorruptObjectError, InvalidInputError
from mvcstore.objects import (
    Blob,
    Epoch,
    Graph,
    Node,
    State,
    StoredObject,
    Tensor,
    children_of,
    decode_object,
    dtype_size,
    encode_object,
    object_id,
)


def _oid(label: str) -> ObjectId:
    return codec.hash_object("blob", label.encode())


def _graph() -> Graph:
    return Graph(
        nodes={
            "conv": Node(
                id="conv",
                name="conv1",
                data={"class": "Conv2d", "kernel": [3, 3], "scale": 0.5},
                outputs={"relu": 0},
                pruning_plan_id="plan-7",
                wrapper={"class": "ParametrizedConv2d"},
            ),
            "relu": Node(id="relu", inputs={"conv": 0}),
        },
        meta={"framework": "torch", "input": [1, 3, 32, 32]},
    )


def _epoch() -> Epoch:
    return Epoch(
        parents=(_oid("parent"),),
        state=_oid("state"),
        graph=_oid("graph"),
        extra={"optimizer": _oid("optimizer")},
        params={"lr": 0.1, "schedule": {"warmup": 5}},
        number=7,
        step=700,
        time_ns=1_700_000_000_000_000_000,
        message="pruned conv",
        summary={"acc": 0.9},
        uid="0123abcd",
        session="baseline",
        meta={"exact_resume": True},
    )


ALL_OBJECTS: list[StoredObject] = [
    Blob(b"\x00\x01\x02"),
    Blob(b""),
    Tensor(dtype="F32", shape=(2, 3), data=_oid("data"), nbytes=24),
    Tensor(dtype="BF16", shape=(), data=_oid("scalar"), nbytes=2),
    State(tensors={"fc.weight": _oid("w"), "fc.bias": _oid("b")}),
    State(),
    _graph(),
    Graph(),
    _epoch(),
    Epoch(),
]


@pytest.mark.parametrize("obj", ALL_OBJECTS, ids=lambda obj: type(obj).__name__)
def test_object_round_trips_through_its_bytes(obj: StoredObject) -> None:
    decoded = decode_object(obj.kind, encode_object(obj))

    assert decoded == obj
    assert object_id(decoded) == object_id(obj)


def test_blob_bytes_are_its_data() -> None:
    assert encode_object(Blob(b"raw")) == b"raw"
    assert object_id(Blob(b"raw")) == codec.hash_object("blob", b"raw")


def test_same_content_gives_same_id() -> None:
    assert object_id(_epoch()) == object_id(_epoch())
    assert object_id(_graph()) == object_id(_graph())


def test_epoch_own_id_is_not_hashed() -> None:
    epoch = _epoch()
    with_id = replace(epoch, id=_oid("anything"))

    assert encode_object(with_id) == encode_object(epoch)
    assert with_id == epoch


def test_state_tensor_order_does_not_change_the_id() -> None:
    forward = State(tensors={"a": _oid("1"), "b": _oid("2")})
    backward = State(tensors={"b": _oid("2"), "a": _oid("1")})

    assert object_id(forward) == object_id(backward)


def test_epoch_params_int_and_float_give_different_ids() -> None:
    as_int = replace(_epoch(), params={"lr": 1})
    as_float = replace(_epoch(), params={"lr": 1.0})

    assert object_id(as_int) != object_id(as_float)


def test_epoch_parent_is_the_first_parent() -> None:
    assert _epoch().parent == _oid("parent")
    assert Epoch().parent is None


def test_tensor_needs_the_bytes_its_shape_implies() -> None:
    with pytest.raises(InvalidInputError, match="needs 24 bytes, got 23"):
        Tensor(dtype="F32", shape=(2, 3), data=_oid("x"), nbytes=23)


def test_tensor_refuses_unknown_dtype() -> None:
    with pytest.raises(InvalidInputError, match="unknown tensor dtype"):
        Tensor(dtype="F128", shape=(1,), data=_oid("x"), nbytes=16)


def test_tensor_refuses_negative_dimension() -> None:
    with pytest.raises(InvalidInputError, match="not all sizes"):
        Tensor(dtype="U8", shape=(-1,), data=_oid("x"), nbytes=0)


def test_tensor_numel_is_the_product_of_its_shape() -> None:
    assert Tensor(dtype="I64", shape=(3, 4), data=_oid("x"), nbytes=96).numel == 12


def test_dtype_size_is_the_element_width_of_a_known_dtype() -> None:
    assert dtype_size("BF16") == 2
    assert dtype_size("C128") == 16
    with pytest.raises(InvalidInputError):
        dtype_size("f32")


def test_graph_from_node_list_equals_graph_from_node_map() -> None:
    value = _graph().to_value()
    listed = {"nodes": list(value["nodes"].values()), "meta": value["meta"]}

    assert Graph.from_value(listed) == Graph.from_value(value) == _graph()


def test_node_name_defaults_to_its_id() -> None:
    graph = Graph.from_value({"nodes": [{"id": "fc"}]})

    assert graph.nodes["fc"].name == "fc"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "must be an object with a 'nodes' field"),
        ({"meta": {}}, "must be an object with a 'nodes' field"),
        ({"nodes": {}, "edges": []}, "unknown fields: edges"),
        ({"nodes": "fc"}, "must be an object or a list"),
        ({"nodes": [{"id": "a"}, {"id": "a"}]}, "node id 'a' twice"),
        ({"nodes": {"x": {"id": "y"}}}, "keyed 'x' has id 'y'"),
        ({"nodes": [], "meta": []}, "'meta' must be an object"),
        ({"nodes": ["fc"]}, "node must be an object"),
        ({"nodes": [{"name": "fc"}]}, "non-empty string 'id'"),
        ({"nodes": [{"id": ""}]}, "non-empty string 'id'"),
        ({"nodes": [{"id": "a", "kind": 1}]}, "unknown fields: kind"),
        ({"nodes": [{"id": "a", "name": 1}]}, "'name' must be a string"),
        ({"nodes": [{"id": "a", "data": []}]}, "'data' must be an object"),
        ({"nodes": [{"id": "a", "pruning_plan_id": 3}]}, "must be a string"),
        ({"nodes": [{"id": "a", "wrapper": "w"}]}, "'wrapper' must be an object"),
    ],
)
def test_malformed_graph_is_refused(value: object, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Graph.from_value(value)


def test_children_are_the_ids_an_object_refers_to() -> None:
    epoch = _epoch()
    tensor = Tensor(dtype="U8", shape=(1,), data=_oid("d"), nbytes=1)
    state = State(tensors={"t": _oid("t")})

    assert set(children_of(epoch)) == {
        _oid("parent"),
        _oid("state"),
        _oid("graph"),
        _oid("optimizer"),
    }
    assert list(children_of(tensor)) == [_oid("d")]
    assert list(children_of(state)) == [_oid("t")]
    assert list(children_of(Blob(b"x"))) == []
    assert list(children_of(_graph())) == []


def _packed(value: object) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def _tensor_value(**changes: object) -> dict[str, object]:
    value: dict[str, object] = {
        "dtype": "F32",
        "shape": [2],
        "data": _oid("d").raw,
        "nbytes": 8,
    }
    value.update(changes)
    return value


@pytest.mark.parametrize(
    ("kind", "value", "reason"),
    [
        ("tensor", [1, 2], "not a map"),
        ("tensor", _tensor_value(extra=1), "unknown fields"),
        ("tensor", {"dtype": "F32", "shape": [2], "nbytes": 8}, "'data' is missing"),
        ("tensor", _tensor_value(data=None), "has type NoneType"),
        ("tensor", _tensor_value(data=b"short"), "not a 32-byte id"),
        ("tensor", _tensor_value(shape=[2.0]), "non-integer"),
        ("tensor", _tensor_value(shape=[True]), "non-integer"),
        ("tensor", _tensor_value(nbytes=True), "has type bool"),
        ("tensor", _tensor_value(nbytes=9), "needs 8 bytes"),
        ("tensor", _tensor_value(dtype="F128"), "unknown tensor dtype"),
        ("state", {"tensors": {"w": None}}, "null id"),
        ("state", {"tensors": [1]}, "has type list"),
        ("graph", {"nodes": 1}, "must be an object or a list"),
        ("epoch", {"parents": []}, "is missing"),
    ],
)
def test_malformed_object_is_corrupt(kind: str, value: object, reason: str) -> None:
    with pytest.raises(CorruptObjectError, match=reason):
        decode_object(kind, _packed(value))


def _epoch_value(**changes: object) -> dict[str, object]:
    value = msgpack.unpackb(encode_object(_epoch()), raw=False)
    value.update(changes)
    return value


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"parents": [None]}, "null id"),
        ({"parents": [b"x"]}, "32-byte id"),
        ({"summary": {"acc": 1}}, "not a float"),
        ({"number": "7"}, "has type str"),
        ({"message": None}, "has type NoneType"),
        ({"extra": {"optimizer": None}}, "null id"),
        ({"state": b"x" * 31}, "32-byte id"),
        ({"author": "me"}, "unknown fields"),
    ],
)
def test_malformed_epoch_is_corrupt(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(CorruptObjectError, match=reason):
        decode_object("epoch", _packed(_epoch_value(**changes)))


def test_epoch_without_state_or_graph_decodes() -> None:
    decoded = decode_object("epoch", _packed(_epoch_value(state=None, graph=None)))

    assert isinstance(decoded, Epoch)
    assert decoded.state is None
    assert decoded.graph is None


def test_decode_error_names_the_object_id() -> None:
    oid = _oid("named")

    with pytest.raises(CorruptObjectError) as caught:
        decode_object("state", _packed({"tensors": 1}), oid=oid)

    assert caught.value.object_id == oid.hex
    assert oid.hex in str(caught.value)


def test_unknown_kind_is_corrupt() -> None:
    with pytest.raises(CorruptObjectError, match="unknown kind"):
        decode_object("commit", _packed({}))
