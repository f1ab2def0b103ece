"""The training platform's own MongoDB documents, shaped from epochs and graphs.

The platform's API server reads four collections whose shape the original
design note fixed: ``Epoch``, ``ModelGraph``, ``Weights`` and
``TrainingSession``. This module builds those documents as plain dicts from
mvcstore's objects, and makes any value storable on MongoDB and on
MongoDB-compatible servers that refuse dots and ``$`` in keys, arrays directly
inside arrays, NaN, infinities and integers beyond 64 bits. It performs no I/O
(``stores.mongo`` writes what it builds) and must not import a driver.

Identifiers are hex strings: mvcstore ids are 32-byte BLAKE3 hashes, not
MongoDB ObjectIds. ``Epoch._id`` is the epoch's uid, the value every metric
document of the epoch carries, so the platform's dashboard can query metric
documents with the ids a session lists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Final

from mvcstore.codec import ObjectId
from mvcstore.objects import Graph

__all__ = [
    "EPOCH",
    "MODEL_GRAPH",
    "WEIGHTS",
    "TRAINING_SESSION",
    "MAX_SESSION_EPOCHS",
    "escape_key",
    "unescape_key",
    "storable",
    "epoch_doc",
    "epoch_entry",
    "weights_doc",
    "model_graph_doc",
    "model_graph_stub",
    "model_name_of",
    "session_doc",
]

EPOCH: Final = "Epoch"
MODEL_GRAPH: Final = "ModelGraph"
WEIGHTS: Final = "Weights"
TRAINING_SESSION: Final = "TrainingSession"

MAX_SESSION_EPOCHS: Final = 60_000
"""Most epochs a ``TrainingSession`` lists (about 200 bytes each under 16 MiB)."""

_ESCAPES: Final = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_UNESCAPES: Final = {code: char for char, code in _ESCAPES.items()}
_ESCAPED: Final = re.compile("%(?:25|2[Ee]|24|00)")
_INT_MIN: Final = -(1 << 63)
_INT_MAX: Final = (1 << 63) - 1


def escape_key(key: str) -> str:
    """Return ``key`` with ``%``, ``.``, ``$`` and NUL percent-encoded.

    Every storable key round-trips through ``unescape_key``; a key without
    those characters is unchanged.
    """
    if not any(char in key for char in _ESCAPES):
        return key
    return "".join(_ESCAPES.get(char, char) for char in key)


def unescape_key(key: str) -> str:
    """Return the key that ``escape_key`` encoded as ``key``."""
    if "%" not in key:
        return key
    return _ESCAPED.sub(lambda match: _UNESCAPES[match.group(0).upper()], key)


def storable(value: object) -> object:
    """Return ``value`` in a form every supported server stores as it is.

    - map keys are escaped with ``escape_key``;
    - a list directly inside a list becomes ``{"array": [...]}``;
    - NaN, infinities become the strings ``"NaN"``, ``"Infinity"``,
      ``"-Infinity"``;
    - integers outside 64 bits become decimal strings;
    - tuples become lists; ``ObjectId`` becomes hex; other scalars are kept.

    Args:
        value: A tree of plain values (what a graph's nodes hold).

    Returns:
        The storable tree.
    """
    return _storable(value, in_list=False)


def _storable(value: object, *, in_list: bool) -> object:
    if isinstance(value, bool) or value is None or isinstance(value, str | bytes):
        return value
    if isinstance(value, int):
        return value if _INT_MIN <= value <= _INT_MAX else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, ObjectId):
        return value.hex
    if isinstance(value, Mapping):
        return {
            escape_key(str(key)): _storable(item, in_list=False)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        items = [_storable(item, in_list=True) for item in value]
        return {"array": items} if in_list else items
    return str(value)


def _hex(oid: ObjectId | None) -> str | None:
    return oid.hex if oid is not None else None


def epoch_entry(
    uid: str, graph: ObjectId | None, state: ObjectId | None
) -> dict[str, object]:
    """Return the seed's ``Epoch`` shape: ``{_id, modelGraphId, weightsId}``.

    A ``TrainingSession`` lists its epochs in this shape.
    """
    return {"_id": uid, "modelGraphId": _hex(graph), "weightsId": _hex(state)}


def epoch_doc(
    *,
    uid: str,
    epoch_id: ObjectId,
    graph: ObjectId | None,
    state: ObjectId | None,
    number: int,
    step: int,
    session: str,
    time_ns: int,
    parent_uid: str | None,
) -> dict[str, object]:
    """Return an ``Epoch`` document: the seed's fields plus mvcstore's.

    Args:
        uid: The epoch's uid (its metric documents carry it): the ``_id``.
        epoch_id: The mvcstore epoch id, as ``epochId``.
        graph: The graph id, as ``modelGraphId``.
        state: The weights (state) id, as ``weightsId``.
        number: The epoch number.
        step: The epoch's last step.
        session: The session it was committed on.
        time_ns: Its commit time.
        parent_uid: The uid of its first parent, if any.
    """
    doc = epoch_entry(uid, graph, state)
    doc.update(
        {
            "epochId": epoch_id.hex,
            "number": number,
            "step": step,
            "session": session,
            "timeNs": time_ns,
            "parentId": parent_uid,
        }
    )
    return doc


def weights_doc(
    state: ObjectId, graph: ObjectId | None, location: str
) -> dict[str, object]:
    """Return a ``Weights`` document.

    ``weghitsFileLocation`` keeps the seed's spelling so the existing API server
    finds it; ``weightsFileLocation`` holds the same value, correctly spelled.

    Args:
        state: The weights (state) id: the ``_id``.
        graph: The graph the weights belong to, as ``modelGraphHash``.
        location: Where the state object is stored.
    """
    return {
        "_id": state.hex,
        "modelGraphHash": _hex(graph),
        "weghitsFileLocation": location,
        "weightsFileLocation": location,
    }


def model_name_of(graph: Graph | None, default: str) -> str:
    """Return a model's name: the graph's ``meta`` name, class, or ``default``."""
    if graph is not None:
        for key in ("name", "model", "class"):
            value = graph.meta.get(key)
            if isinstance(value, str) and value:
                return value
    return default


def model_graph_doc(
    graph_id: ObjectId,
    state: ObjectId | None,
    graph: Graph,
    *,
    model_name: str,
) -> dict[str, object]:
    """Return a ``ModelGraph`` document with every node.

    Node ids become keys of ``modelGraph.nodes`` (escaped by ``escape_key``;
    each node keeps its exact id in its ``id`` field).

    Args:
        graph_id: The graph id: ``_id`` and ``modelGraph.id``.
        state: The weights first committed with this graph, as ``weightsId``.
        graph: The graph.
        model_name: The model's name.
    """
    nodes = {
        escape_key(node_id): storable(node.to_value())
        for node_id, node in graph.nodes.items()
    }
    return {
        "_id": graph_id.hex,
        "weightsId": _hex(state),
        "modelGraph": {"id": graph_id.hex, "nodes": nodes},
        "meta": storable(dict(graph.meta)),
        "modelName": model_name,
        "nodeCount": len(graph.nodes),
        "nodesOmitted": False,
    }


def model_graph_stub(
    graph_id: ObjectId,
    state: ObjectId | None,
    *,
    node_count: int,
    location: str,
    model_name: str,
) -> dict[str, object]:
    """Return a ``ModelGraph`` document without nodes, for a graph too large.

    ``nodesOmitted`` is true and ``graphLocation`` says where the whole graph
    object is stored.
    """
    return {
        "_id": graph_id.hex,
        "weightsId": _hex(state),
        "modelGraph": {"id": graph_id.hex, "nodes": {}},
        "modelName": model_name,
        "nodeCount": node_count,
        "nodesOmitted": True,
        "graphLocation": location,
    }


def session_doc(
    name: str,
    line: Sequence[Mapping[str, object]],
    *,
    head: ObjectId,
    state: ObjectId | None,
    model_name: str,
    time_ns: int,
) -> dict[str, object]:
    """Return a ``TrainingSession`` document.

    Args:
        name: The session name: the ``_id``.
        line: ``epoch_entry`` dicts of the session's first-parent line, oldest
            first: a fork lists its inherited epochs up to the fork point, then
            its own.
        head: The session's head epoch, as ``headEpochId``.
        state: The head's weights, as ``weightsId``.
        model_name: As ``modelName``.
        time_ns: When the document was built.

    Returns:
        The document; past ``MAX_SESSION_EPOCHS`` only the newest are listed
        and ``epochsTruncated`` is true (``epochCount`` keeps the full count).
    """
    kept = list(line[-MAX_SESSION_EPOCHS:])
    return {
        "_id": name,
        "epochs": kept,
        "weightsId": _hex(state),
        "modelName": model_name,
        "headEpochId": head.hex,
        "epochCount": len(line),
        "epochsTruncated": len(kept) < len(line),
        "updatedNs": time_ns,
    }
