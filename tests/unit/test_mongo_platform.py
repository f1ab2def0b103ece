"""The platform's seed-shaped documents, built without a server."""

from __future__ import annotations

import math

import pytest

from mvcstore.codec import ObjectId
from mvcstore.objects import Graph
from mvcstore.stores import mongo_platform as platform


def _id(n: int) -> ObjectId:
    return ObjectId(bytes([n]) * 32)


@pytest.mark.parametrize(
    "key", ["plain", "layer1.0.conv", "$where", "100%", "a%2Eb", "x\x00y", "", "%"]
)
def test_keys_escape_and_come_back(key: str) -> None:
    escaped = platform.escape_key(key)

    assert "." not in escaped and "$" not in escaped and "\x00" not in escaped
    assert platform.unescape_key(escaped) == key


def test_storable_values_suit_every_server() -> None:
    value = {
        "a.b": [[1, 2], [3, [4]]],
        "nan": math.nan,
        "inf": [math.inf, -math.inf],
        "big": 1 << 64,
        "id": _id(1),
        "t": (1.5, None, True, b"\x00"),
    }

    assert platform.storable(value) == {
        "a%2Eb": [{"array": [1, 2]}, {"array": [3, {"array": [4]}]}],
        "nan": "NaN",
        "inf": ["Infinity", "-Infinity"],
        "big": str(1 << 64),
        "id": _id(1).hex,
        "t": [1.5, None, True, b"\x00"],
    }


def test_a_model_graph_keeps_the_seed_shape() -> None:
    graph = Graph.from_value(
        {
            "nodes": [
                {"id": "fc.1", "data": {"out": 4}, "outputs": {"fc.2": 0}},
                {"id": "fc.2", "inputs": {"fc.1": 0}, "pruning_plan_id": "p"},
            ],
            "meta": {"class": "Net"},
        }
    )

    doc = platform.model_graph_doc(_id(1), _id(2), graph, model_name="Net")

    assert doc["_id"] == _id(1).hex and doc["weightsId"] == _id(2).hex
    model = doc["modelGraph"]
    assert isinstance(model, dict) and model["id"] == _id(1).hex
    assert list(model["nodes"]) == ["fc%2E1", "fc%2E2"]
    first = model["nodes"]["fc%2E1"]
    assert first["id"] == "fc.1" and first["outputs"] == {"fc%2E2": 0}
    assert model["nodes"]["fc%2E2"]["pruning_plan_id"] == "p"
    assert platform.model_name_of(graph, "session") == "Net"
    assert platform.model_name_of(None, "session") == "session"


def test_weights_carry_both_spellings_of_the_location() -> None:
    doc = platform.weights_doc(_id(3), _id(1), "gs://b/objects/03/03")

    assert doc == {
        "_id": _id(3).hex,
        "modelGraphHash": _id(1).hex,
        "weghitsFileLocation": "gs://b/objects/03/03",
        "weightsFileLocation": "gs://b/objects/03/03",
    }


def test_a_session_lists_its_epochs_oldest_first_up_to_a_cap() -> None:
    line = [platform.epoch_entry(f"u{n}", _id(1), _id(2)) for n in range(5)]

    doc = platform.session_doc(
        "b", line, head=_id(9), state=_id(2), model_name="Net", time_ns=1
    )

    assert doc["epochs"] == line and doc["epochCount"] == 5
    assert doc["epochsTruncated"] is False
    assert line[0] == {"_id": "u0", "modelGraphId": _id(1).hex, "weightsId": _id(2).hex}


def test_a_session_past_the_cap_keeps_its_newest_epochs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(platform, "MAX_SESSION_EPOCHS", 3)
    line = [platform.epoch_entry(f"u{n}", None, None) for n in range(5)]

    doc = platform.session_doc(
        "b", line, head=_id(9), state=None, model_name="m", time_ns=1
    )

    assert [entry["_id"] for entry in doc["epochs"]] == ["u2", "u3", "u4"]
    assert doc["epochsTruncated"] is True and doc["epochCount"] == 5
