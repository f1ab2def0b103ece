"""The SQLite metrics index: idempotent adds, conflicts, views, aggregates."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mvcstore.errors import (
    InvalidInputError,
    MetricConflictError,
    RepositoryFormatError,
)
from mvcstore.metrics.base import MetricDoc, check_metric_name, check_value
from mvcstore.metrics.sqlite import SqliteMetricsIndex


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SqliteMetricsIndex]:
    opened = SqliteMetricsIndex(tmp_path / "metrics.sqlite", durable=False, create=True)
    try:
        yield opened
    finally:
        opened.close()


def _doc(uid: str, step: int, name: str, value: float) -> MetricDoc:
    return MetricDoc(uid=uid, step=step, name=name, value=value, time_ns=step)


def _rows(index: SqliteMetricsIndex) -> int:
    return int(index.conn.execute("SELECT count(*) FROM docs").fetchone()[0])


def test_add_stores_each_document_once(index: SqliteMetricsIndex) -> None:
    docs = [_doc("e1", 0, "loss", 1.0), _doc("e1", 1, "loss", 0.5)]

    assert index.add(docs) == 2
    assert index.add(docs) == 0
    assert index.add([*docs, _doc("e1", 2, "loss", 0.25)]) == 1
    assert _rows(index) == 3


def test_same_value_at_another_time_is_not_new(index: SqliteMetricsIndex) -> None:
    index.add([MetricDoc("e1", 0, "loss", 1.0, time_ns=1)])

    assert index.add([MetricDoc("e1", 0, "loss", 1.0, time_ns=2)]) == 0


def test_other_value_at_same_step_conflicts_and_adds_nothing(
    index: SqliteMetricsIndex,
) -> None:
    index.add([_doc("e1", 5, "loss", 1.0)])

    with pytest.raises(MetricConflictError) as caught:
        index.add([_doc("e1", 6, "loss", 0.9), _doc("e1", 5, "loss", 2.0)])

    error = caught.value
    assert (error.epoch_uid, error.step, error.name) == ("e1", 5, "loss")
    assert (error.stored, error.new) == (1.0, 2.0)
    assert "'loss'" in str(error) and "e1" in str(error)
    assert _rows(index) == 1
    assert [doc.step for doc in index.query(["e1"])] == [5]


def test_nan_reads_back_as_nan_and_relogs_without_conflict(
    index: SqliteMetricsIndex,
) -> None:
    index.add([_doc("e1", 0, "loss", math.nan)])

    assert index.add([_doc("e1", 0, "loss", math.nan)]) == 0
    (doc,) = index.query(["e1"])
    assert math.isnan(doc.value)
    with pytest.raises(MetricConflictError):
        index.add([_doc("e1", 0, "loss", 1.0)])


def test_infinities_read_back(index: SqliteMetricsIndex) -> None:
    index.add([_doc("e1", 0, "up", math.inf), _doc("e1", 0, "down", -math.inf)])

    values = {doc.name: doc.value for doc in index.query(["e1"])}

    assert values == {"up": math.inf, "down": -math.inf}


def test_query_returns_only_the_given_uids(index: SqliteMetricsIndex) -> None:
    index.add([_doc(uid, 0, "loss", 1.0) for uid in ("e1", "e2", "e3")])

    assert {doc.uid for doc in index.query(["e1", "e3"])} == {"e1", "e3"}
    assert list(index.query([])) == []
    assert list(index.query(["unknown"])) == []


def test_query_orders_by_step_then_name(index: SqliteMetricsIndex) -> None:
    index.add(
        [
            _doc("e2", 3, "acc", 0.1),
            _doc("e1", 1, "loss", 0.2),
            _doc("e1", 3, "acc", 0.3),
            _doc("e1", 1, "acc", 0.4),
        ]
    )

    keys = [(doc.step, doc.name, doc.uid) for doc in index.query(["e1", "e2"])]

    assert keys == [
        (1, "acc", "e1"),
        (1, "loss", "e1"),
        (3, "acc", "e1"),
        (3, "acc", "e2"),
    ]


def test_query_filters_names_and_steps(index: SqliteMetricsIndex) -> None:
    index.add([_doc("e1", step, name, step) for step in range(10) for name in "ab"])

    docs = list(index.query(["e1"], names=["b"], min_step=3, max_step=5))

    assert [(doc.step, doc.name) for doc in docs] == [(3, "b"), (4, "b"), (5, "b")]
    assert list(index.query(["e1"], names=[])) == []


def test_count_counts_the_view(index: SqliteMetricsIndex) -> None:
    index.add([_doc("e1", s, "loss", 1.0) for s in range(4)])
    index.add([_doc("e2", s, "loss", 1.0) for s in range(3)])

    assert index.count(["e1"]) == 4
    assert index.count(["e1", "e2", "e3"]) == 7
    assert index.count([]) == 0


def test_a_large_view_is_queried_in_full(index: SqliteMetricsIndex) -> None:
    uids = [f"e{n}" for n in range(3000)]
    index.add([_doc(uid, n, "loss", float(n)) for n, uid in enumerate(uids)])

    assert index.count(uids) == 3000
    assert len(list(index.query(uids[::2]))) == 1500


def test_stats_ignore_nan_and_report_extremes(index: SqliteMetricsIndex) -> None:
    index.add(
        [
            _doc("e1", 1, "loss", 3.0),
            _doc("e1", 2, "loss", math.nan),
            _doc("e2", 3, "loss", 1.0),
            _doc("e2", 4, "loss", 2.0),
            _doc("e2", 4, "acc", 0.5),
        ]
    )

    stats = index.stats(["e1", "e2"])

    loss = stats["loss"]
    assert (loss.count, loss.first_step, loss.last_step) == (4, 1, 4)
    assert loss.last == 2.0
    assert (loss.min, loss.min_step) == (1.0, 3)
    assert (loss.max, loss.max_step) == (3.0, 1)
    assert set(index.stats(["e1", "e2"], names=["acc"])) == {"acc"}
    assert index.stats(["e1"])["loss"].count == 2


def test_stats_of_only_nan_are_nan(index: SqliteMetricsIndex) -> None:
    index.add([_doc("e1", 1, "loss", math.nan)])

    loss = index.stats(["e1"])["loss"]

    assert math.isnan(loss.last) and math.isnan(loss.min) and math.isnan(loss.max)


def test_delete_uids_removes_only_their_documents(index: SqliteMetricsIndex) -> None:
    index.add([_doc(uid, 0, "loss", 1.0) for uid in ("e1", "e2")])

    assert index.delete_uids(["e1"]) == 1

    assert list(index.iter_uids()) == ["e2"]
    assert index.count(["e1", "e2"]) == 1


def test_documents_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "metrics.sqlite"
    first = SqliteMetricsIndex(path, durable=True, create=True)
    first.add([_doc("e1", 0, "loss", 0.5)])
    first.flush()
    first.close()

    second = SqliteMetricsIndex(path, durable=True)
    try:
        assert [doc.value for doc in second.query(["e1"])] == [0.5]
    finally:
        second.close()


@pytest.mark.parametrize("name", ["", "x" * 201, "a\tb", "\x7f", 3, None])
def test_bad_metric_name_is_refused(name: object) -> None:
    with pytest.raises(InvalidInputError):
        check_metric_name(name)


def test_metric_values_become_floats() -> None:
    assert check_value("n", 3) == 3.0
    assert isinstance(check_value("n", 3), float)
    assert check_value("n", np.float32(0.5)) == 0.5
    assert check_value("n", np.array(2.0)) == 2.0


@pytest.mark.parametrize("value", [True, "1.0", None, [1.0], np.zeros(2), 1j])
def test_non_number_metric_value_is_refused(value: object) -> None:
    with pytest.raises(InvalidInputError, match="must be a number"):
        check_value("acc", value)


def test_failed_delete_rolls_back_and_leaves_the_index_usable(
    index: SqliteMetricsIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.add([_doc("e1", 0, "loss", 1.0)])

    def fail(uids: object) -> None:
        index.conn.execute("DELETE FROM docs")
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(index, "_load_view", fail)
    with pytest.raises(RepositoryFormatError, match="disk I/O error"):
        index.delete_uids(["e1"])
    monkeypatch.undo()

    assert index.count(["e1"]) == 1
    assert index.add([_doc("e1", 1, "loss", 0.5)]) == 1
