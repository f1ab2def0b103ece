"""The MetricsIndex contract, for every implementation."""

from __future__ import annotations

import math

import pytest

from mvcstore.errors import MetricConflictError
from mvcstore.metrics.base import MetricDoc, MetricsIndex


def _doc(uid: str, step: int, name: str, value: float) -> MetricDoc:
    return MetricDoc(uid=uid, step=step, name=name, value=value, time_ns=step + 1)


def test_add_stores_each_document_once(metrics_index: MetricsIndex) -> None:
    docs = [_doc("e1", 0, "loss", 1.0), _doc("e1", 1, "loss", 0.5)]

    assert metrics_index.add(docs) == 2
    assert metrics_index.add(docs) == 0
    assert metrics_index.add([*docs, _doc("e1", 2, "loss", 0.25)]) == 1
    assert metrics_index.count(["e1"]) == 3


def test_a_document_is_visible_to_the_next_query(metrics_index: MetricsIndex) -> None:
    metrics_index.add([_doc("e1", 7, "acc", 0.75)])

    assert list(metrics_index.query(["e1"])) == [_doc("e1", 7, "acc", 0.75)]


def test_another_value_at_the_same_step_conflicts_and_adds_nothing(
    metrics_index: MetricsIndex,
) -> None:
    metrics_index.add([_doc("e1", 5, "loss", 1.0)])

    with pytest.raises(MetricConflictError) as caught:
        metrics_index.add([_doc("e1", 6, "loss", 0.9), _doc("e1", 5, "loss", 2.0)])

    error = caught.value
    assert (error.epoch_uid, error.step, error.name) == ("e1", 5, "loss")
    assert (error.stored, error.new) == (1.0, 2.0)
    assert [doc.step for doc in metrics_index.query(["e1"])] == [5]


def test_a_conflict_inside_one_batch_adds_nothing(metrics_index: MetricsIndex) -> None:
    with pytest.raises(MetricConflictError):
        metrics_index.add([_doc("e1", 1, "loss", 1.0), _doc("e1", 1, "loss", 3.0)])

    assert metrics_index.count(["e1"]) == 0


def test_nan_and_infinities_read_back(metrics_index: MetricsIndex) -> None:
    metrics_index.add(
        [
            _doc("e1", 0, "nan", math.nan),
            _doc("e1", 0, "up", math.inf),
            _doc("e1", 0, "down", -math.inf),
            _doc("e1", 0, "zero", -0.0),
        ]
    )

    values = {doc.name: doc.value for doc in metrics_index.query(["e1"])}

    assert math.isnan(values.pop("nan"))
    assert values == {"up": math.inf, "down": -math.inf, "zero": 0.0}
    assert metrics_index.add([_doc("e1", 0, "nan", math.nan)]) == 0
    with pytest.raises(MetricConflictError):
        metrics_index.add([_doc("e1", 0, "nan", 1.0)])


def test_query_returns_only_the_given_uids(metrics_index: MetricsIndex) -> None:
    metrics_index.add([_doc(uid, 0, "loss", 1.0) for uid in ("e1", "e2", "e3")])

    assert {doc.uid for doc in metrics_index.query(["e1", "e3"])} == {"e1", "e3"}
    assert list(metrics_index.query([])) == []
    assert list(metrics_index.query(["unknown"])) == []


def test_query_orders_by_step_then_name_then_uid(metrics_index: MetricsIndex) -> None:
    metrics_index.add(
        [
            _doc("e2", 3, "acc", 0.1),
            _doc("e1", 1, "loss", 0.2),
            _doc("e1", 3, "acc", 0.3),
            _doc("e1", 1, "acc", 0.4),
        ]
    )

    keys = [(d.step, d.name, d.uid) for d in metrics_index.query(["e1", "e2"])]

    assert keys == [
        (1, "acc", "e1"),
        (1, "loss", "e1"),
        (3, "acc", "e1"),
        (3, "acc", "e2"),
    ]


def test_query_filters_names_and_steps(metrics_index: MetricsIndex) -> None:
    metrics_index.add([_doc("e1", s, n, s) for s in range(10) for n in "ab"])

    docs = list(metrics_index.query(["e1"], names=["b"], min_step=3, max_step=5))

    assert [(doc.step, doc.name) for doc in docs] == [(3, "b"), (4, "b"), (5, "b")]
    assert list(metrics_index.query(["e1"], names=[])) == []


def test_a_view_of_many_uids_is_read_in_full(metrics_index: MetricsIndex) -> None:
    uids = [f"e{n:05d}" for n in range(3000)]
    metrics_index.add([_doc(uid, n, "loss", float(n)) for n, uid in enumerate(uids)])

    assert metrics_index.count(uids) == 3000
    docs = list(metrics_index.query(uids[::2]))
    assert [doc.step for doc in docs] == list(range(0, 3000, 2))


def test_stats_report_count_last_and_earliest_extremes(
    metrics_index: MetricsIndex,
) -> None:
    metrics_index.add(
        [
            _doc("e1", 1, "loss", 3.0),
            _doc("e1", 2, "loss", math.nan),
            _doc("e2", 3, "loss", 1.0),
            _doc("e2", 4, "loss", 3.0),
            _doc("e2", 6, "loss", 1.0),
            _doc("e2", 7, "loss", 2.0),
            _doc("e2", 4, "acc", 0.5),
        ]
    )

    stats = metrics_index.stats(["e1", "e2"])

    assert list(stats) == ["acc", "loss"]
    loss = stats["loss"]
    assert (loss.count, loss.first_step, loss.last_step, loss.last) == (6, 1, 7, 2.0)
    assert (loss.min, loss.min_step, loss.max, loss.max_step) == (1.0, 3, 3.0, 1)
    assert set(metrics_index.stats(["e1", "e2"], names=["acc"])) == {"acc"}
    assert metrics_index.stats(["e1", "e2"], names=[]) == {}
    assert metrics_index.stats(["e1"])["loss"].count == 2
    bounded = metrics_index.stats(["e1", "e2"], min_step=3, max_step=6)["loss"]
    assert (bounded.count, bounded.first_step, bounded.last_step) == (3, 3, 6)
    assert (bounded.max, bounded.max_step) == (3.0, 4)


def test_stats_let_infinities_win_and_ignore_nan(metrics_index: MetricsIndex) -> None:
    metrics_index.add(
        [
            _doc("e1", 1, "x", 2.0),
            _doc("e1", 2, "x", math.inf),
            _doc("e1", 3, "x", -math.inf),
            _doc("e1", 4, "x", math.inf),
            _doc("e1", 5, "x", math.nan),
            _doc("e1", 1, "only_nan", math.nan),
        ]
    )

    stats = metrics_index.stats(["e1"])

    x = stats["x"]
    assert (x.min, x.min_step, x.max, x.max_step) == (-math.inf, 3, math.inf, 2)
    assert math.isnan(x.last)
    only = stats["only_nan"]
    assert math.isnan(only.min) and math.isnan(only.max) and math.isnan(only.last)
    assert only.min_step == only.max_step == 1


def test_values_at_reads_one_step_per_epoch(metrics_index: MetricsIndex) -> None:
    metrics_index.add(
        [_doc("e1", s, "acc", s / 10) for s in range(5)]
        + [_doc("e2", 9, "acc", 0.9), _doc("e2", 9, "loss", 1.5)]
    )

    values = metrics_index.values_at({"e1": 4, "e2": 9, "e3": 1}, "acc")

    assert values == {"e1": 0.4, "e2": 0.9}
    assert metrics_index.values_at({"e1": 4}, "unknown") == {}


def test_delete_uids_removes_only_their_documents(metrics_index: MetricsIndex) -> None:
    metrics_index.add(
        [_doc(uid, s, "loss", 1.0) for uid in ("e1", "e2") for s in range(3)]
    )

    assert metrics_index.delete_uids(["e1"]) == 3

    assert list(metrics_index.iter_uids()) == ["e2"]
    assert metrics_index.count(["e1", "e2"]) == 3
    assert metrics_index.add([_doc("e1", 0, "loss", 7.0)]) == 1


def test_iter_uids_lists_each_uid_once_in_order(metrics_index: MetricsIndex) -> None:
    metrics_index.add(
        [_doc(uid, s, "loss", 1.0) for uid in ("b", "a", "c") for s in (1, 2)]
    )

    assert list(metrics_index.iter_uids()) == ["a", "b", "c"]
    metrics_index.flush()
