"""The search-engine metrics index: request bodies and error paths, no server."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mvcstore.errors import BackendUnavailableError, MetricConflictError
from mvcstore.metrics import elastic
from mvcstore.metrics.base import MetricDoc, MetricStats


def _doc(uid: str, step: int, name: str, value: float) -> MetricDoc:
    return MetricDoc(uid=uid, step=step, name=name, value=value, time_ns=1)


def test_a_document_id_is_uid_name_step_and_stays_short() -> None:
    assert elastic.doc_id(_doc("e1", 7, "loss", 0.5)) == "e1:loss:7"

    long_id = elastic.doc_id(_doc("e1", 7, "\U0001d535" * 200, 0.5))

    assert len(long_id.encode()) <= 512 and long_id.startswith("e1:#")
    assert long_id == elastic.doc_id(_doc("e1", 7, "\U0001d535" * 200, 9.0))


@pytest.mark.parametrize("value", [0.25, -0.0, math.inf, -math.inf, math.nan])
def test_values_round_trip_through_a_source(value: float) -> None:
    source = elastic.doc_source(_doc("e1", 3, "x", value))
    back = elastic.doc_from_source(source)

    assert back.same_value(value) and (back.uid, back.step, back.name) == ("e1", 3, "x")
    if not math.isfinite(value):
        assert source["value"] is None and source["special"]


def test_uids_split_under_the_terms_limit_and_the_clause_limit() -> None:
    uids = [f"u{n:03d}" for n in range(230)]

    clauses = elastic.split_uids(uids, 50)
    groups = elastic.uid_groups(uids, 50, max_clauses=2)

    assert [len(clause) for clause in clauses] == [50, 50, 50, 50, 30]
    assert [len(group) for group in groups] == [2, 2, 1]
    assert [uid for group in groups for clause in group for uid in clause] == uids


def test_a_view_query_is_a_filter_over_uid_clauses() -> None:
    query = elastic.view_query([["a", "b"], ["c"]], names=["loss"], min_step=3)

    filters = query["bool"]["filter"]
    assert filters[0] == {
        "bool": {
            "should": [{"terms": {"uid": ["a", "b"]}}, {"terms": {"uid": ["c"]}}],
            "minimum_should_match": 1,
        }
    }
    assert filters[1:] == [
        {"terms": {"name": ["loss"]}},
        {"range": {"step": {"gte": 3}}},
    ]


def test_a_search_page_sorts_and_continues_after_the_last_hit() -> None:
    body = elastic.search_body(
        {"match_all": {}}, size=100, after=[4, "loss", "e1"], pit_id="p"
    )

    assert body["sort"] == [{"step": "asc"}, {"name": "asc"}, {"uid": "asc"}]
    assert body["search_after"] == [4, "loss", "e1"] and body["size"] == 100
    assert body["pit"] == {"id": "p", "keep_alive": "2m"}


def _hit(source: dict[str, Any]) -> dict[str, Any]:
    return {"hits": {"hits": [{"_source": source}]}}


def test_stats_are_read_from_an_aggregation_bucket() -> None:
    bucket = {
        "key": {"name": "loss"},
        "doc_count": 6,
        "steps": {"min": 1.0, "max": 7.0},
        "last": _hit({"value": 2.0, "step": 7}),
        "finite": {
            "low": _hit({"value": 1.0, "step": 3}),
            "high": _hit({"value": 3.0, "step": 1}),
        },
        "specials": {"buckets": [{"key": "inf", "first": {"value": 5.0}}]},
    }

    stats = elastic.stats_from_bucket(bucket)

    assert stats == MetricStats(
        name="loss",
        count=6,
        first_step=1,
        last_step=7,
        last=2.0,
        min=1.0,
        min_step=3,
        max=math.inf,
        max_step=5,
    )


def test_stats_of_two_disjoint_views_merge() -> None:
    a = MetricStats("x", 2, 1, 5, 0.5, 0.1, 2, 0.9, 5)
    b = MetricStats("x", 3, 0, 9, 0.7, 0.1, 1, 0.9, 9)
    only_nan = MetricStats("x", 1, 4, 4, math.nan, math.nan, 4, math.nan, 4)

    merged = elastic.merge_stats(elastic.merge_stats(a, b), only_nan)

    assert merged == MetricStats("x", 6, 0, 9, 0.7, 0.1, 1, 0.9, 5)


def test_limits_prefer_the_index_setting_over_the_default() -> None:
    response = {
        "metrics": {
            "settings": {"index.max_terms_count": "50"},
            "defaults": {
                "index.max_terms_count": "65536",
                "index.max_result_window": "10000",
            },
        }
    }

    assert elastic.limits_from_settings(response) == elastic.IndexLimits(50, 10000)


class FakeTransport:
    """Answers bulk and mget from canned responses; records what was sent."""

    location = "os+http://127.0.0.1:9/metrics"

    def __init__(self) -> None:
        self.bulk_answers: list[dict[str, Any]] = []
        self.mget_answers: list[dict[str, Any]] = []
        self.bulks: list[list[dict[str, Any]]] = []
        self.fail: BaseException | None = None

    def create_index(self, index: str, body: dict[str, Any]) -> None:
        if self.fail is not None:
            raise self.fail

    def mget(self, index: str, ids: list[str]) -> dict[str, Any]:
        if self.mget_answers:
            return self.mget_answers.pop(0)
        return {"docs": [{"_id": key, "found": False} for key in ids]}

    def bulk(
        self, operations: list[dict[str, Any]], *, refresh: str | bool
    ) -> dict[str, Any]:
        self.bulks.append(operations)
        return self.bulk_answers.pop(0)


def _index(transport: FakeTransport, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(elastic.time, "sleep", lambda seconds: None)
    return elastic._SearchMetricsIndex(transport, "metrics")  # type: ignore[arg-type]


def _item(key: str, status: int) -> dict[str, Any]:
    return {"create": {"_id": key, "status": status}}


def test_busy_items_are_sent_again_until_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = FakeTransport()
    transport.bulk_answers = [
        {"items": [_item("e1:a:0", 201), _item("e1:b:0", 429)]},
        {"items": [_item("e1:b:0", 201)]},
    ]
    index = _index(transport, monkeypatch)

    assert index.add([_doc("e1", 0, "a", 1.0), _doc("e1", 0, "b", 2.0)]) == 2

    assert len(transport.bulks) == 2 and len(transport.bulks[1]) == 2


def test_an_index_that_stays_busy_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = FakeTransport()
    transport.bulk_answers = [{"items": [_item("e1:a:0", 503)]}] * 10
    index = _index(transport, monkeypatch)

    with pytest.raises(BackendUnavailableError) as caught:
        index.add([_doc("e1", 0, "a", 1.0)])

    assert caught.value.uri == transport.location


def test_a_writer_that_won_the_race_with_another_value_is_a_conflict(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = FakeTransport()
    transport.bulk_answers = [{"items": [_item("e1:a:0", 409)]}]
    stored = {"uid": "e1", "name": "a", "step": 0, "value": 5.0}
    transport.mget_answers = [
        {"docs": [{"_id": "e1:a:0", "found": False}]},
        {"docs": [{"_id": "e1:a:0", "found": True, "_source": stored}]},
    ]
    index = _index(transport, monkeypatch)

    with pytest.raises(MetricConflictError) as caught:
        index.add([_doc("e1", 0, "a", 1.0)])

    assert (caught.value.stored, caught.value.new) == (5.0, 1.0)


def test_a_writer_that_won_the_race_with_the_same_value_is_fine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = FakeTransport()
    transport.bulk_answers = [{"items": [_item("e1:a:0", 409)]}]
    stored = {"uid": "e1", "name": "a", "step": 0, "value": 1.0}
    transport.mget_answers = [
        {"docs": [{"_id": "e1:a:0", "found": False}]},
        {"docs": [{"_id": "e1:a:0", "found": True, "_source": stored}]},
    ]
    index = _index(transport, monkeypatch)

    assert index.add([_doc("e1", 0, "a", 1.0)]) == 0


def test_a_refused_document_is_reported_with_the_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    transport = FakeTransport()
    refused = {
        "create": {"_id": "e1:a:0", "status": 400, "error": {"reason": "bad field"}}
    }
    transport.bulk_answers = [{"items": [refused]}]
    index = _index(transport, monkeypatch)

    with pytest.raises(BackendUnavailableError, match="bad field"):
        index.add([_doc("e1", 0, "a", 1.0)])


def test_an_unreachable_server_is_unavailable_without_credentials() -> None:
    index = elastic.OpenSearchMetricsIndex(
        "http://127.0.0.1:9", "metrics", username="alice", password="s3cret"
    )
    index.transport.client.transport.max_retries = 0

    with pytest.raises(BackendUnavailableError) as caught:
        index.add([_doc("e1", 0, "a", 1.0)])

    assert "s3cret" not in str(caught.value) and "alice" not in str(caught.value)
    assert caught.value.uri == "os+http://127.0.0.1:9/metrics"
