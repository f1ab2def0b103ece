"""Views past the search engine's terms limit and result window.

A view is a set of epoch uids; the engine caps the values of one ``terms``
clause (``index.max_terms_count``) and the hits one search may page through
(``index.max_result_window``). Both are crossed here, once at their defaults
with a lineage of 70,000 epochs, once with the index's limits lowered under a
repository's real lineage and fork.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import servers

from mvcstore import Repo
from mvcstore.codec import ObjectId
from mvcstore.metrics.base import MetricDoc, MetricsIndex
from mvcstore.metrics.elastic import (
    ElasticMetricsIndex,
    IndexLimits,
    OpenSearchMetricsIndex,
)
from mvcstore.metrics.sqlite import SqliteMetricsIndex
from mvcstore.stores.mongo import EPOCHS, MongoDatabase, MongoEpochIndex

pytestmark = pytest.mark.integration

LINEAGE = 70_000


@pytest.fixture(params=["os", "es"])
def search(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(kind, index name) of a fresh index, deleted afterwards."""
    kind = str(request.param)
    name = servers.unique(f"mvc-view-{kind}-")
    servers.search_url(kind)
    try:
        yield kind, name
    finally:
        servers.delete_index(kind, name)


def _open(kind: str, name: str) -> MetricsIndex:
    cls = OpenSearchMetricsIndex if kind == "os" else ElasticMetricsIndex
    return cls(servers.search_url(kind), name)


def _id(n: int) -> ObjectId:
    return ObjectId(n.to_bytes(32, "big"))


@pytest.fixture(scope="module")
def lineage_uids() -> Iterator[set[str]]:
    """The uids of a 70,000-epoch line, as the MongoDB epoch index walks them.

    The epoch index is written in bulk (a sibling of 50 epochs forked at epoch
    100 sits beside it), then a fresh reader computes the line's ancestry.
    """
    name = servers.unique("mvc_line_")
    database = MongoDatabase(servers.mongo_uri(name))
    line = [
        _epoch_doc(_id(n), [_id(n - 1)] if n > 1 else [], n, f"u{n:06d}")
        for n in range(1, LINEAGE + 1)
    ]
    sibling = [
        _epoch_doc(
            _id(10**6 + n),
            [_id(10**6 + n - 1) if n > 1 else _id(100)],
            100 + n,
            f"s{n:03d}",
        )
        for n in range(1, 51)
    ]
    try:
        database.collection(EPOCHS).insert_many(line + sibling, ordered=False)
        index = MongoEpochIndex(database)
        reach = index.ancestors([_id(LINEAGE)])
        yield {entry.uid for entry in index.get_many(reach).values()}
    finally:
        database.drop()
        database.close()


def _epoch_doc(
    oid: ObjectId, parents: list[ObjectId], number: int, uid: str
) -> dict[str, object]:
    return {
        "_id": oid.hex,
        "parents": [parent.hex for parent in parents],
        "number": number,
        "step": number,
        "uid": uid,
        "session": "main",
        "time_ns": number,
        "state": None,
        "graph": None,
    }


def test_a_view_of_70000_epochs_returns_every_document(
    search: tuple[str, str], lineage_uids: set[str]
) -> None:
    uids = lineage_uids
    assert len(uids) == LINEAGE and not any(uid.startswith("s") for uid in uids)

    metrics = _open(*search)
    try:
        view_docs = [
            MetricDoc(uid, n, "loss", n / 7, n) for n, uid in enumerate(sorted(uids))
        ]
        sibling = [MetricDoc(f"s{n:03d}", n, "loss", 0.5, n) for n in range(1, 51)]
        assert metrics.add(view_docs + sibling) == LINEAGE + 50

        limits = metrics.limits()  # type: ignore[attr-defined]
        assert LINEAGE > limits.max_terms and LINEAGE > limits.max_window

        got = list(metrics.query(uids))
        assert len(got) == LINEAGE
        assert got == view_docs
        assert metrics.count(uids) == LINEAGE
        stats = metrics.stats(uids)["loss"]
        assert (stats.count, stats.first_step, stats.last_step) == (
            LINEAGE,
            0,
            LINEAGE - 1,
        )
    finally:
        metrics.close()  # type: ignore[attr-defined]


def test_lowered_limits_still_give_exactly_the_lineage(
    search: tuple[str, str], tmp_path: Path
) -> None:
    kind, name = search
    uri = f"{kind}+{servers.search_url(kind)}/{name}"
    repo = Repo.init(tmp_path, durable=False, metrics=uri)
    try:
        main = repo.session("main")
        line = [
            main.commit({"w": np.array([n], np.int32)}, step=10 * n)
            for n in range(1, 231)
        ]
        repo.fork("side", at="main#120")
        side = repo.session("side")
        forked = [
            side.commit({"w": np.array([-n], np.int32)}, step=1200 + 10 * n + 5)
            for n in range(1, 31)
        ]

        rng = random.Random(7)
        docs = [
            MetricDoc(
                line[i % 230].uid, 10 * (i % 230) + 10 + i // 230, name, rng.random()
            )
            for i in range(1000)
            for name in ["loss" if i % 2 else "acc"]
        ]
        side_docs = [
            MetricDoc(
                forked[i % 30].uid,
                1200 + 10 * (i % 30) + 15,
                f"m{i // 30}",
                rng.random(),
            )
            for i in range(300)
        ]
        assert repo.metrics_index.add(docs + side_docs) == 1300
        servers.set_index_limits(kind, name, terms=50, window=100)
        assert repo.metrics_index.limits() == IndexLimits(50, 100)  # type: ignore[attr-defined]

        view = repo.metrics("main")
        assert len(view) == 1000
        assert len({(d.uid, d.name, d.step) for d in view}) == 1000
        assert sorted(view, key=lambda d: (d.step, d.name, d.uid)) == view

        local = SqliteMetricsIndex(
            tmp_path / "check.sqlite", durable=False, create=True
        )
        local.add(docs + side_docs)
        main_uids = {e.uid for e in line}
        expected = sorted(docs, key=lambda d: (d.step, d.name, d.uid))
        assert view == expected == list(local.query(main_uids))
        assert repo.metric_stats("main") == local.stats(main_uids)

        side_uids = repo.view_uids("side")
        side_view = repo.metrics("side")
        assert len(side_uids) == 150
        assert side_view == list(local.query(side_uids))
        assert repo.metric_stats("side") == local.stats(side_uids)
        local.close()
    finally:
        repo.close()
