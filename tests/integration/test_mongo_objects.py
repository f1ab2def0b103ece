"""Objects past MongoDB's 16 MiB document limit, stored in chunks."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import servers

from mvcstore import Repo
from mvcstore.codec import frame, hash_object, unframe
from mvcstore.errors import ObjectNotFoundError
from mvcstore.objects import Graph, encode_object
from mvcstore.stores.mongo import CHUNK_SIZE, CHUNKS, MongoDatabase, MongoObjectStore

pytestmark = pytest.mark.integration

LIMIT = 16 << 20


@pytest.fixture
def database() -> Iterator[MongoDatabase]:
    name = servers.unique("mvc_big_")
    opened = MongoDatabase(servers.mongo_uri(name))
    try:
        yield opened
    finally:
        opened.drop()
        opened.close()


def _big_graph(nodes: int, *, tag_bytes: int) -> Graph:
    # random tags keep the frame from compressing under the document limit
    return Graph.from_value(
        {
            "nodes": [
                {
                    "id": f"layer{n}.{secrets.token_hex(4)}",
                    "data": {"class": "Linear", "tag": secrets.token_hex(tag_bytes)},
                    "outputs": {"next": n + 1},
                }
                for n in range(nodes)
            ],
            "meta": {"class": "Huge"},
        }
    )


def test_a_40_mb_object_reads_back_bit_for_bit(database: MongoDatabase) -> None:
    store = MongoObjectStore(database)
    data = os.urandom(40 << 20)
    oid, framed = hash_object("blob", data), frame("blob", data, level=0)

    assert store.put_if_absent(oid, framed) is True
    assert store.put_if_absent(oid, framed) is False

    fresh = MongoObjectStore(MongoDatabase(servers.mongo_uri(database.name)))
    assert fresh.get_framed(oid) == framed
    assert fresh.has_many([oid]) == {oid}
    chunks = -(-len(framed) // CHUNK_SIZE)
    assert database.collection(CHUNKS).count_documents({"id": oid.hex}) == chunks
    fresh.database.close()


def test_a_graph_of_200000_nodes_reads_back_bit_for_bit(
    database: MongoDatabase,
) -> None:
    store = MongoObjectStore(database)
    graph = _big_graph(200_000, tag_bytes=24)
    payload = encode_object(graph)
    oid = hash_object("graph", payload)
    framed = frame("graph", payload, level=0)
    assert len(framed) > LIMIT

    assert store.put_if_absent(oid, framed) is True

    stored = store.get_framed(oid)
    assert stored == framed
    assert unframe(stored, object_id=oid).payload == payload


def test_an_object_without_its_head_is_not_stored(database: MongoDatabase) -> None:
    store = MongoObjectStore(database, inline_limit=1 << 20, chunk_size=1 << 20)
    data = os.urandom(3 << 20)
    oid, framed = hash_object("blob", data), frame("blob", data, level=0)
    # a writer that died after its first chunk
    store._put_chunk(oid, 0, framed[: 1 << 20])

    assert store.has_many([oid]) == set()
    assert list(store.iter_ids()) == []
    with pytest.raises(ObjectNotFoundError):
        store.get_framed(oid)

    assert store.put_if_absent(oid, framed) is True
    assert store.get_framed(oid) == framed


def test_a_commit_with_a_huge_graph_keeps_the_platform_readable(
    database: MongoDatabase, tmp_path: Path
) -> None:
    uri = servers.mongo_uri(database.name)
    graph = _big_graph(1_000, tag_bytes=10_000)
    with Repo.init(tmp_path, durable=False, objects=uri, refs=uri) as repo:
        epoch = repo.session("big").commit({"w": np.ones(4, np.float32)}, graph=graph)

        assert repo.read_graph(epoch.graph) == graph
        doc = database.collection("ModelGraph").find_one({"_id": epoch.graph.hex})
        assert doc["nodesOmitted"] is True and doc["nodeCount"] == 1_000
        assert doc["graphLocation"] == repo.objects.describe(epoch.graph)
        session = database.collection("TrainingSession").find_one({"_id": "big"})
        assert [entry["_id"] for entry in session["epochs"]] == [epoch.uid]
        assert repo.fsck().problems == []
