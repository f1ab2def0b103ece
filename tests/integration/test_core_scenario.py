"""The core scenario on objects in GCS, refs in MongoDB, metrics in a search engine.

Commit, fork, log, checkout and the metrics view behave as on the embedded
default; the platform's own MongoDB collections read back as the seed design
describes them, a fork listing its inherited epochs before its own.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pymongo
import pytest
import servers
from servers import RemoteUris
from support import assert_clean, make_graph, make_state

from mvcstore import Epoch, Repo
from mvcstore.metrics.sqlite import SqliteMetricsIndex
from mvcstore.stores.mongo_platform import escape_key

pytestmark = pytest.mark.integration


def _commit(repo: Repo, name: str, numbers: range, out: list[Epoch]) -> None:
    session = repo.session(name)
    offset = 0.0 if name == "a" else 0.5
    for number in numbers:
        session.log_metrics(10 * number - 8, loss=1.0 / number + offset)
        session.log_metrics(10 * number - 4, loss=0.9 / number + offset)
        graph = {1: make_graph(16), 3: make_graph(12)}.get(number)
        epoch = session.commit(
            make_state(name, number),
            graph=graph,
            params={"lr": 0.1 if name == "a" else 0.01},
            metrics={"acc": number / 10 + offset},
            message=f"{name} epoch {number}",
        )
        out.append(epoch)


def _history(uris: RemoteUris, path: Path) -> tuple[Repo, list[Epoch], list[Epoch]]:
    repo = Repo.init(path, objects=uris.objects, refs=uris.refs, metrics=uris.metrics)
    a: list[Epoch] = []
    b: list[Epoch] = []
    _commit(repo, "a", range(1, 7), a)
    repo.fork("b", at="a#4")
    _commit(repo, "b", range(5, 7), b)
    return repo, a, b


def test_commit_fork_log_checkout_and_view_on_remote_backends(
    remote_any_search: RemoteUris, tmp_path: Path
) -> None:
    repo, a, b = _history(remote_any_search, tmp_path)
    try:
        endpoint = urlsplit(repo.objects.client._connection.API_BASE_URL).hostname  # type: ignore[attr-defined]
        assert endpoint == "127.0.0.1"

        assert [e.number for e in repo.log("b")] == [6, 5, 4, 3, 2, 1]
        assert [e.id for e in repo.log("a")] == [e.id for e in reversed(a)]
        assert repo.resolve_id("b~2") == a[3].id

        out = repo.checkout("a#3")
        for name, array in make_state("a", 3).items():
            assert np.array_equal(out.state[name], array)
        assert out.graph == make_graph(12)

        view_b = repo.metrics("b")
        view_a = repo.metrics("a")
        assert len(view_a) == 6 * 3 and len(view_b) == 6 * 3
        assert {doc.uid for doc in view_b} == {e.uid for e in [*a[:4], *b]}
        assert repo.metrics_index.count({e.uid for e in [*a, *b]}) == 8 * 3

        # the same documents in the embedded index give the same statistics
        local = SqliteMetricsIndex(
            tmp_path / "check.sqlite", durable=False, create=True
        )
        local.add(view_b)
        assert repo.metric_stats("b") == local.stats({doc.uid for doc in view_b})
        local.close()
        assert_clean(repo)
    finally:
        repo.close()

    with Repo.open(tmp_path) as again:
        assert [name for name, _ in again.sessions()] == ["a", "b"]
        assert [e.number for e in again.log("b")] == [6, 5, 4, 3, 2, 1]
        assert len(again.metrics("b")) == 18
        assert_clean(again)


def _platform(database: str) -> Any:
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        servers.require_env(servers.MONGO_ENV)
    )
    return client, client[database]


def test_the_platform_reads_a_fork_as_the_seed_describes(
    remote: RemoteUris, tmp_path: Path
) -> None:
    repo, a, b = _history(remote, tmp_path)
    client, db = _platform(remote.database)
    try:
        session_b = db["TrainingSession"].find_one({"_id": "b"})
        listed = [entry["_id"] for entry in session_b["epochs"]]
        assert listed == [e.uid for e in [*a[:4], *b]]
        assert session_b["weightsId"] == b[-1].state.hex
        assert session_b["modelName"] == "a"
        assert session_b["headEpochId"] == b[-1].id.hex
        session_a = db["TrainingSession"].find_one({"_id": "a"})
        assert [entry["_id"] for entry in session_a["epochs"]] == [e.uid for e in a]

        # every listed epoch is an Epoch document naming its graph and weights
        for epoch in [*a, *b]:
            doc = db["Epoch"].find_one({"_id": epoch.uid})
            assert doc["modelGraphId"] == epoch.graph.hex
            assert doc["weightsId"] == epoch.state.hex
            assert doc["epochId"] == epoch.id.hex
            entry = {
                "_id": epoch.uid,
                "modelGraphId": epoch.graph.hex,
                "weightsId": epoch.state.hex,
            }
            assert entry in session_a["epochs"] or entry in session_b["epochs"]
        assert db["Epoch"].count_documents({}) == 8

        graph = db["ModelGraph"].find_one({"_id": a[2].graph.hex})
        assert graph["modelGraph"]["id"] == a[2].graph.hex
        assert set(graph["modelGraph"]["nodes"]) == {escape_key("fc1"), "fc2"}
        assert graph["modelGraph"]["nodes"]["fc1"]["data"]["out"] == 12
        assert graph["weightsId"] == a[2].state.hex
        assert db["ModelGraph"].count_documents({}) == 2

        weights = db["Weights"].find_one({"_id": b[0].state.hex})
        assert weights["modelGraphHash"] == b[0].graph.hex
        location = repo.objects.describe(b[0].state)
        assert (
            weights["weghitsFileLocation"] == weights["weightsFileLocation"] == location
        )

        # the dashboard's flow: the session's epoch ids select its documents
        docs = list(repo.metrics_index.query(listed))
        assert docs == repo.metrics("b")

        # a deleted session leaves the platform's view too
        repo.delete_session("a")
        assert db["TrainingSession"].find_one({"_id": "a"}) is None
        assert_clean(repo)
    finally:
        client.close()
        repo.close()


def test_a_mirror_that_fell_behind_is_rebuilt_at_the_next_move(
    remote: RemoteUris, tmp_path: Path
) -> None:
    repo, a, _ = _history(remote, tmp_path)
    client, db = _platform(remote.database)
    try:
        db["TrainingSession"].delete_one({"_id": "a"})
        db["Epoch"].delete_many({})

        session = repo.session("a")
        session.log_metrics(session.next_step, loss=math.pi)
        newest = session.commit(make_state("a", 7))

        listed = db["TrainingSession"].find_one({"_id": "a"})["epochs"]
        assert [entry["_id"] for entry in listed] == [e.uid for e in [*a, newest]]
        assert db["Epoch"].count_documents({}) == 7
    finally:
        client.close()
        repo.close()
