"""Metric documents in Elasticsearch 8 or OpenSearch 2, queried by uid sets.

Two parts. The pure part builds every request body as plain dicts and reads
every response (document ids, sources, the uid filter split under the
server's terms limit, sort and ``search_after`` pages, the aggregations behind
``stats``); it needs no server and is unit-tested alone. The adapters,
``ElasticMetricsIndex`` (elasticsearch-py 8, ``es+http://HOST:PORT/INDEX``) and
``OpenSearchMetricsIndex`` (opensearch-py, ``os+http://HOST:PORT/INDEX``), run
those requests through a small transport per client, which owns the client's
differences (point-in-time calls, errors) and translates its errors into
``BackendUnavailableError``.

A document's ``_id`` is ``uid:name:step``, so logging it again is idempotent;
writes use ``op_type=create`` and never overwrite. Before a bulk write the
documents' ids are read back with one ``mget`` per batch, and a stored value
that differs raises ``MetricConflictError`` with nothing written. Two writers
racing on the same id between that read and the write are caught by the
create (the loser's document is refused and reported), but the rest of the
loser's batch is then already written: the small race docs/backends.md
describes. NaN and infinities, which JSON and a ``double`` field cannot hold,
are stored as a null ``value`` with ``special`` set to ``nan``, ``inf`` or
``-inf``. This layer must not compute reachability: the caller hands it uids.
"""

from __future__ import annotations

import heapq
import logging
import math
import random
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import blake3
from elasticsearch import ApiError as EsApiError
from elasticsearch import Elasticsearch
from elasticsearch import TransportError as EsTransportError
from opensearchpy import OpenSearch
from opensearchpy.exceptions import ConnectionError as OsConnectionError
from opensearchpy.exceptions import OpenSearchException
from opensearchpy.exceptions import TransportError as OsTransportError

from mvcstore.errors import (
    BackendUnavailableError,
    InvalidInputError,
    MetricConflictError,
)
from mvcstore.metrics.base import MetricDoc, MetricStats
from mvcstore.stores.registry import redact_text, redact_uri

__all__ = [
    "ElasticMetricsIndex",
    "OpenSearchMetricsIndex",
    "IndexLimits",
    "MAPPING",
    "MAX_CLAUSES",
    "REFRESH_INTERVAL",
    "doc_id",
    "doc_source",
    "doc_from_source",
    "value_from_source",
    "split_uids",
    "uid_groups",
    "view_query",
    "search_body",
    "stats_body",
    "stats_from_bucket",
    "merge_stats",
    "uids_body",
    "limits_from_settings",
    "index_body",
]

logger = logging.getLogger(__name__)

Json = dict[str, Any]

MAPPING: Final[Json] = {
    "dynamic": "strict",
    "properties": {
        "uid": {"type": "keyword"},
        "name": {"type": "keyword"},
        "step": {"type": "long"},
        "value": {"type": "double"},
        "special": {"type": "keyword"},
        "time_ns": {"type": "long"},
    },
}
"""The index mapping: uids and names are keywords, steps and times longs."""

DEFAULT_MAX_TERMS: Final = 65_536
DEFAULT_MAX_WINDOW: Final = 10_000
MAX_CLAUSES: Final = 512
"""Terms clauses per query; more uids than this many clauses hold are queried
in several requests whose results are merged."""

REFRESH_INTERVAL: Final = "200ms"
"""Refresh interval of an index this module creates: ``add`` waits for the
next refresh (``refresh=wait_for``), so this bounds a training step's wait."""

_PAGE: Final = 10_000
_MGET_BATCH: Final = 2_000
_BULK_BATCH: Final = 5_000
_STATS_PAGE: Final = 100
_UIDS_PAGE: Final = 1_000
_MAX_ID_BYTES: Final = 512
_PIT_KEEP_ALIVE: Final = "2m"
_BULK_ATTEMPTS: Final = 6
_SORT: Final = ({"step": "asc"}, {"name": "asc"}, {"uid": "asc"})
_SPECIALS: Final = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# -- the pure part: request bodies and responses --------------------------


@dataclass(frozen=True, slots=True)
class IndexLimits:
    """The index settings that bound one request.

    Attributes:
        max_terms: ``index.max_terms_count``: values per ``terms`` clause.
        max_window: ``index.max_result_window``: hits per page.
    """

    max_terms: int = DEFAULT_MAX_TERMS
    max_window: int = DEFAULT_MAX_WINDOW


def index_body(*, refresh_interval: str | None = None) -> Json:
    """Return the body that creates the index: one shard, no replica, the mapping."""
    settings: Json = {"number_of_shards": 1, "number_of_replicas": 0}
    if refresh_interval is not None:
        settings["refresh_interval"] = refresh_interval
    return {"settings": settings, "mappings": MAPPING}


def doc_id(doc: MetricDoc) -> str:
    """Return a document's ``_id``: ``uid:name:step``.

    A name long enough to push the id past the server's 512-byte limit is
    replaced by ``#`` and its BLAKE3 hash, which keeps the id deterministic.
    """
    text = f"{doc.uid}:{doc.name}:{doc.step}"
    if len(text.encode()) <= _MAX_ID_BYTES:
        return text
    digest = blake3.blake3(doc.name.encode()).hexdigest()[:32]
    return f"{doc.uid}:#{digest}:{doc.step}"


def doc_source(doc: MetricDoc) -> Json:
    """Return a document's stored source; a non-finite value becomes ``special``."""
    source: Json = {
        "uid": doc.uid,
        "name": doc.name,
        "step": doc.step,
        "time_ns": doc.time_ns,
    }
    if math.isfinite(doc.value):
        source["value"] = doc.value
    else:
        source["value"] = None
        source["special"] = (
            "nan" if math.isnan(doc.value) else ("inf" if doc.value > 0 else "-inf")
        )
    return source


def value_from_source(source: Mapping[str, Any]) -> float:
    """Return the value a stored source holds (NaN and infinities included)."""
    value = source.get("value")
    if value is None:
        return _SPECIALS.get(str(source.get("special")), math.nan)
    return float(value)


def doc_from_source(source: Mapping[str, Any]) -> MetricDoc:
    """Return the metric document a stored source holds."""
    return MetricDoc(
        uid=str(source["uid"]),
        step=int(source["step"]),
        name=str(source["name"]),
        value=value_from_source(source),
        time_ns=int(source.get("time_ns") or 0),
    )


def split_uids(uids: Sequence[str], max_terms: int) -> list[list[str]]:
    """Split uids into ``terms`` clauses of at most ``max_terms`` values each."""
    size = max(1, max_terms)
    return [list(uids[start : start + size]) for start in range(0, len(uids), size)]


def uid_groups(
    uids: Sequence[str], max_terms: int, max_clauses: int = MAX_CLAUSES
) -> list[list[list[str]]]:
    """Split uids into requests, each a list of at most ``max_clauses`` clauses.

    The requests select disjoint documents, so their results add up.
    """
    clauses = split_uids(uids, max_terms)
    size = max(1, max_clauses)
    return [clauses[start : start + size] for start in range(0, len(clauses), size)]


def view_query(
    clauses: Sequence[Sequence[str]],
    *,
    names: Collection[str] | None = None,
    min_step: int | None = None,
    max_step: int | None = None,
) -> Json:
    """Return the filter-only query of a view: any of the uid clauses, and the rest.

    Args:
        clauses: The uids, split by ``split_uids``.
        names: Only these metric names (all when None).
        min_step: Only steps at or above.
        max_step: Only steps at or below.
    """
    should = [{"terms": {"uid": list(clause)}} for clause in clauses]
    filters: list[Json] = [{"bool": {"should": should, "minimum_should_match": 1}}]
    if names is not None:
        filters.append({"terms": {"name": sorted(set(names))}})
    if min_step is not None or max_step is not None:
        bounds: Json = {}
        if min_step is not None:
            bounds["gte"] = min_step
        if max_step is not None:
            bounds["lte"] = max_step
        filters.append({"range": {"step": bounds}})
    return {"bool": {"filter": filters}}


def search_body(
    query: Json,
    *,
    size: int,
    after: Sequence[Any] | None = None,
    pit_id: str | None = None,
    source: bool = True,
) -> Json:
    """Return one page of a view, sorted by step, name and uid.

    Args:
        query: From ``view_query``.
        size: Hits per page (at most the index's result window).
        after: The ``sort`` values of the previous page's last hit.
        pit_id: A point in time to read from (then no index is named).
        source: Whether hits carry their source.
    """
    body: Json = {
        "size": size,
        "query": query,
        "sort": [dict(key) for key in _SORT],
        "track_total_hits": False,
        "_source": ["uid", "name", "step", "value", "special", "time_ns"]
        if source
        else False,
    }
    if after is not None:
        body["search_after"] = list(after)
    if pit_id is not None:
        body["pit"] = {"id": pit_id, "keep_alive": _PIT_KEEP_ALIVE}
    return body


def _top_hit(sort: list[Json]) -> Json:
    return {
        "top_hits": {
            "size": 1,
            "sort": sort,
            "_source": ["value", "special", "step"],
        }
    }


def stats_body(query: Json, *, after: Mapping[str, Any] | None = None) -> Json:
    """Return one page of per-metric aggregates over a view.

    Per name: document count, smallest and largest step, the value at the
    largest step, the smallest and largest finite values with their steps,
    and the first step of each non-finite kind.
    """
    composite: Json = {
        "size": _STATS_PAGE,
        "sources": [{"name": {"terms": {"field": "name"}}}],
    }
    if after is not None:
        composite["after"] = dict(after)
    finite = {"exists": {"field": "value"}}
    return {
        "size": 0,
        "query": query,
        "aggs": {
            "names": {
                "composite": composite,
                "aggs": {
                    "steps": {"stats": {"field": "step"}},
                    "last": _top_hit([{"step": "desc"}, {"uid": "asc"}]),
                    "finite": {
                        "filter": finite,
                        "aggs": {
                            "low": _top_hit([{"value": "asc"}, {"step": "asc"}]),
                            "high": _top_hit([{"value": "desc"}, {"step": "asc"}]),
                        },
                    },
                    "specials": {
                        "terms": {"field": "special", "size": 3},
                        "aggs": {"first": {"min": {"field": "step"}}},
                    },
                },
            }
        },
    }


def _first_source(agg: Mapping[str, Any]) -> Mapping[str, Any] | None:
    hits = agg.get("hits", {}).get("hits", [])
    return hits[0]["_source"] if hits else None


def stats_from_bucket(bucket: Mapping[str, Any]) -> MetricStats:
    """Return the statistics one ``stats_body`` bucket holds.

    Infinities win the minimum and maximum as they do in the embedded index;
    NaN is ignored; with no usable value, min and max are NaN at the last step.
    """
    steps = bucket["steps"]
    first_step = int(steps["min"])
    last_step = int(steps["max"])
    last_source = _first_source(bucket["last"])
    last = value_from_source(last_source) if last_source else math.nan
    specials = {
        str(item["key"]): int(item["first"]["value"])
        for item in bucket.get("specials", {}).get("buckets", [])
    }

    def extreme(agg_name: str, special: str) -> tuple[float, int]:
        if special in specials:
            return _SPECIALS[special], specials[special]
        source = _first_source(bucket["finite"][agg_name])
        if source is None:
            return math.nan, last_step
        return float(source["value"]), int(source["step"])

    low, low_step = extreme("low", "-inf")
    high, high_step = extreme("high", "inf")
    return MetricStats(
        name=str(bucket["key"]["name"]),
        count=int(bucket["doc_count"]),
        first_step=first_step,
        last_step=last_step,
        last=last,
        min=low,
        min_step=low_step,
        max=high,
        max_step=high_step,
    )


def merge_stats(a: MetricStats, b: MetricStats) -> MetricStats:
    """Combine the statistics of one metric over two disjoint sets of documents."""
    last_step = max(a.last_step, b.last_step)
    last = a.last if a.last_step >= b.last_step else b.last
    lows = [(s.min, s.min_step) for s in (a, b) if not math.isnan(s.min)]
    highs = [(-s.max, s.max_step) for s in (a, b) if not math.isnan(s.max)]
    low, low_step = min(lows) if lows else (math.nan, last_step)
    neg_high, high_step = min(highs) if highs else (math.nan, last_step)
    return MetricStats(
        name=a.name,
        count=a.count + b.count,
        first_step=min(a.first_step, b.first_step),
        last_step=last_step,
        last=last,
        min=low,
        min_step=low_step,
        max=-neg_high if highs else math.nan,
        max_step=high_step,
    )


def uids_body(*, after: Mapping[str, Any] | None = None) -> Json:
    """Return one page of the distinct uids that hold documents, in order."""
    composite: Json = {
        "size": _UIDS_PAGE,
        "sources": [{"uid": {"terms": {"field": "uid"}}}],
    }
    if after is not None:
        composite["after"] = dict(after)
    return {"size": 0, "aggs": {"uids": {"composite": composite}}}


def limits_from_settings(response: Mapping[str, Any]) -> IndexLimits:
    """Read the terms and result-window limits from a ``_settings`` answer.

    The answer is asked with ``include_defaults`` and ``flat_settings``; a
    value set on the index wins over the default.
    """
    for entry in response.values():
        merged = {**entry.get("defaults", {}), **entry.get("settings", {})}
        return IndexLimits(
            max_terms=int(merged.get("index.max_terms_count", DEFAULT_MAX_TERMS)),
            max_window=int(merged.get("index.max_result_window", DEFAULT_MAX_WINDOW)),
        )
    return IndexLimits()


# -- transports: one per client --------------------------------------------


class _Transport(Protocol):
    location: str

    def create_index(self, index: str, body: Json) -> None: ...

    def settings(self, index: str) -> Json: ...

    def mget(self, index: str, ids: list[str]) -> Json: ...

    def bulk(self, operations: list[Json], *, refresh: str | bool) -> Json: ...

    def search(self, index: str | None, body: Json) -> Json: ...

    def count(self, index: str, body: Json) -> int: ...

    def open_pit(self, index: str) -> str | None: ...

    def close_pit(self, pit_id: str) -> None: ...

    def close(self) -> None: ...


def _short(exc: BaseException) -> str:
    return redact_text(str(exc).strip() or type(exc).__name__)[:300]


class _ElasticTransport:
    """Requests through elasticsearch-py 8."""

    def __init__(self, client: Elasticsearch, location: str) -> None:
        self.client = client
        self.location = location

    def _fail(self, action: str, exc: BaseException) -> BackendUnavailableError:
        return BackendUnavailableError(self.location, f"{action} failed: {_short(exc)}")

    def create_index(self, index: str, body: Json) -> None:
        try:
            self.client.indices.create(index=index, body=body)
        except EsApiError as exc:
            if "resource_already_exists" in str(exc):
                return
            raise self._fail(f"create index {index}", exc) from exc
        except EsTransportError as exc:
            raise self._fail(f"create index {index}", exc) from exc

    def settings(self, index: str) -> Json:
        try:
            response = self.client.indices.get_settings(
                index=index, include_defaults=True, flat_settings=True
            )
        except (EsApiError, EsTransportError) as exc:
            raise self._fail(f"read settings of {index}", exc) from exc
        return dict(response.body)

    def mget(self, index: str, ids: list[str]) -> Json:
        try:
            return dict(self.client.mget(index=index, body={"ids": ids}).body)
        except (EsApiError, EsTransportError) as exc:
            raise self._fail("read metric documents", exc) from exc

    def bulk(self, operations: list[Json], *, refresh: str | bool) -> Json:
        try:
            return dict(self.client.bulk(body=operations, refresh=refresh).body)
        except (EsApiError, EsTransportError) as exc:
            raise self._fail("write metric documents", exc) from exc

    def search(self, index: str | None, body: Json) -> Json:
        try:
            return dict(self.client.search(index=index, body=body).body)
        except (EsApiError, EsTransportError) as exc:
            raise self._fail("search metric documents", exc) from exc

    def count(self, index: str, body: Json) -> int:
        try:
            return int(self.client.count(index=index, body=body)["count"])
        except (EsApiError, EsTransportError) as exc:
            raise self._fail("count metric documents", exc) from exc

    def open_pit(self, index: str) -> str | None:
        try:
            response = self.client.open_point_in_time(
                index=index, keep_alive=_PIT_KEEP_ALIVE
            )
        except EsApiError as exc:
            # a server without point in time still pages with search_after
            logger.debug("no point in time on %s: %s", self.location, _short(exc))
            return None
        except EsTransportError as exc:
            raise self._fail("open a point in time", exc) from exc
        return str(response["id"])

    def close_pit(self, pit_id: str) -> None:
        try:
            self.client.close_point_in_time(id=pit_id)
        except (EsApiError, EsTransportError) as exc:
            # it expires on its own after keep_alive
            logger.debug("point in time not closed on %s: %s", self.location, exc)

    def close(self) -> None:
        self.client.close()


class _OpenSearchTransport:
    """Requests through opensearch-py."""

    def __init__(self, client: OpenSearch, location: str) -> None:
        self.client = client
        self.location = location

    def _fail(self, action: str, exc: BaseException) -> BackendUnavailableError:
        return BackendUnavailableError(self.location, f"{action} failed: {_short(exc)}")

    def create_index(self, index: str, body: Json) -> None:
        try:
            self.client.indices.create(index=index, body=body)
        except OpenSearchException as exc:
            if "resource_already_exists" in str(exc):
                return
            raise self._fail(f"create index {index}", exc) from exc

    def settings(self, index: str) -> Json:
        try:
            response = self.client.indices.get_settings(
                index=index,
                params={"include_defaults": "true", "flat_settings": "true"},
            )
        except OpenSearchException as exc:
            raise self._fail(f"read settings of {index}", exc) from exc
        return dict(response)

    def mget(self, index: str, ids: list[str]) -> Json:
        try:
            return dict(self.client.mget(index=index, body={"ids": ids}))
        except OpenSearchException as exc:
            raise self._fail("read metric documents", exc) from exc

    def bulk(self, operations: list[Json], *, refresh: str | bool) -> Json:
        value = refresh if isinstance(refresh, str) else str(refresh).lower()
        try:
            return dict(self.client.bulk(body=operations, params={"refresh": value}))
        except OpenSearchException as exc:
            raise self._fail("write metric documents", exc) from exc

    def search(self, index: str | None, body: Json) -> Json:
        try:
            return dict(self.client.search(index=index, body=body))
        except OpenSearchException as exc:
            raise self._fail("search metric documents", exc) from exc

    def count(self, index: str, body: Json) -> int:
        try:
            return int(self.client.count(index=index, body=body)["count"])
        except OpenSearchException as exc:
            raise self._fail("count metric documents", exc) from exc

    def open_pit(self, index: str) -> str | None:
        try:
            response = self.client.create_pit(
                index=index, params={"keep_alive": _PIT_KEEP_ALIVE}
            )
        except OsConnectionError as exc:
            raise self._fail("open a point in time", exc) from exc
        except OsTransportError as exc:
            # a server without point in time still pages with search_after
            logger.debug("no point in time on %s: %s", self.location, _short(exc))
            return None
        except OpenSearchException as exc:
            raise self._fail("open a point in time", exc) from exc
        return str(response["pit_id"])

    def close_pit(self, pit_id: str) -> None:
        try:
            self.client.delete_pit(body={"pit_id": [pit_id]})
        except OpenSearchException as exc:
            # it expires on its own after keep_alive
            logger.debug("point in time not closed on %s: %s", self.location, exc)

    def close(self) -> None:
        self.client.close()


# -- the index -------------------------------------------------------------


class _SearchMetricsIndex:
    """The ``MetricsIndex`` over any transport; the adapters pick the client."""

    def __init__(
        self,
        transport: _Transport,
        index: str,
        *,
        refresh: str | bool = "wait_for",
        refresh_interval: str | None = REFRESH_INTERVAL,
    ) -> None:
        self.transport = transport
        self.index = index
        self.location = transport.location
        self.refresh = refresh
        self.refresh_interval = refresh_interval
        self._created = False

    def _ensure_index(self) -> None:
        if self._created:
            return
        self.transport.create_index(
            self.index, index_body(refresh_interval=self.refresh_interval)
        )
        self._created = True

    def limits(self) -> IndexLimits:
        """Return the index's terms and result-window limits, read now.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        self._ensure_index()
        return limits_from_settings(self.transport.settings(self.index))

    # -- writing

    def add(self, docs: Sequence[MetricDoc]) -> int:
        """Store documents; one already stored with the same value is skipped.

        Returns:
            How many documents were new.

        Raises:
            MetricConflictError: If a document is stored with another value;
                nothing of the batch is written then (but see the module
                docstring for two writers racing).
            BackendUnavailableError: If the server cannot be reached.
        """
        if not docs:
            return 0
        self._ensure_index()
        batch: dict[str, MetricDoc] = {}
        for doc in docs:
            key = doc_id(doc)
            first = batch.get(key)
            if first is None:
                batch[key] = doc
            elif not first.same_value(doc.value):
                raise _conflict(doc, first.value)

        # read back what is stored before writing anything
        stored: set[str] = set()
        keys = list(batch)
        for start in range(0, len(keys), _MGET_BATCH):
            response = self.transport.mget(
                self.index, keys[start : start + _MGET_BATCH]
            )
            for found in response.get("docs", []):
                if not found.get("found"):
                    continue
                doc = batch[str(found["_id"])]
                value = value_from_source(found["_source"])
                if not doc.same_value(value):
                    raise _conflict(doc, value)
                stored.add(str(found["_id"]))

        fresh = [(key, doc) for key, doc in batch.items() if key not in stored]
        added = 0
        for start in range(0, len(fresh), _BULK_BATCH):
            part = fresh[start : start + _BULK_BATCH]
            is_last = start + _BULK_BATCH >= len(fresh)
            added += self._create(part, refresh=self.refresh if is_last else False)
        logger.debug("metrics: %d of %d documents new", added, len(docs))
        return added

    def _create(self, part: list[tuple[str, MetricDoc]], *, refresh: str | bool) -> int:
        pending = dict(part)
        added = 0
        delay = 0.2
        for attempt in range(1, _BULK_ATTEMPTS + 1):
            operations: list[Json] = []
            for key, doc in pending.items():
                operations.append({"create": {"_index": self.index, "_id": key}})
                operations.append(doc_source(doc))
            response = self.transport.bulk(operations, refresh=refresh)
            retry: dict[str, MetricDoc] = {}
            raced: list[str] = []
            for item in response.get("items", []):
                result = item.get("create", {})
                key = str(result.get("_id"))
                status = int(result.get("status", 0))
                if 200 <= status < 300:
                    added += 1
                elif status == 409:
                    raced.append(key)
                elif status == 429 or status >= 500:
                    retry[key] = pending[key]
                else:
                    reason = result.get("error", {}).get("reason", status)
                    raise BackendUnavailableError(
                        self.location,
                        f"metric document {key} was refused: {reason}",
                        hint="check the index mapping (see docs/backends.md)",
                    )
            self._check_raced(raced, pending)
            if not retry:
                return added
            if attempt == _BULK_ATTEMPTS:
                break
            pending = retry
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 5.0)
        raise BackendUnavailableError(
            self.location,
            f"{len(pending)} metric documents were still refused after"
            f" {_BULK_ATTEMPTS} attempts (server busy)",
        )

    def _check_raced(self, raced: list[str], pending: Mapping[str, MetricDoc]) -> None:
        # another writer created these between our read and our write
        if not raced:
            return
        response = self.transport.mget(self.index, raced)
        for found in response.get("docs", []):
            doc = pending[str(found["_id"])]
            if found.get("found"):
                value = value_from_source(found["_source"])
                if not doc.same_value(value):
                    raise _conflict(doc, value)

    # -- reading

    def _groups(
        self, uids: Collection[str]
    ) -> tuple[list[list[list[str]]], IndexLimits]:
        ordered = sorted(set(uids))
        if not ordered:
            return [], IndexLimits()
        limits = self.limits()
        return uid_groups(ordered, limits.max_terms), limits

    def query(
        self,
        uids: Collection[str],
        *,
        names: Collection[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> Iterator[MetricDoc]:
        """Yield the documents of ``uids``, ordered by step, name, then uid.

        Pages with ``search_after`` inside a point in time where the server has
        one, so any number of uids and documents is read.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        if names is not None and not names:
            return
        groups, limits = self._groups(uids)
        if not groups:
            return
        size = max(1, min(limits.max_window, _PAGE))
        streams = [
            self._iter_view(
                view_query(group, names=names, min_step=min_step, max_step=max_step),
                size=size,
            )
            for group in groups
        ]
        if len(streams) == 1:
            yield from streams[0]
            return
        yield from heapq.merge(*streams, key=lambda doc: (doc.step, doc.name, doc.uid))

    def _iter_hits(
        self, query: Json, *, size: int, source: bool = True
    ) -> Iterator[Json]:
        pit_id = self.transport.open_pit(self.index)
        try:
            after: list[Any] | None = None
            while True:
                body = search_body(
                    query, size=size, after=after, pit_id=pit_id, source=source
                )
                response = self.transport.search(None if pit_id else self.index, body)
                pit_id = response.get("pit_id", pit_id)
                hits = response["hits"]["hits"]
                yield from hits
                if len(hits) < size:
                    return
                after = list(hits[-1]["sort"])
        finally:
            if pit_id is not None:
                self.transport.close_pit(pit_id)

    def _iter_view(self, query: Json, *, size: int) -> Iterator[MetricDoc]:
        for hit in self._iter_hits(query, size=size):
            yield doc_from_source(hit["_source"])

    def count(self, uids: Collection[str]) -> int:
        """Return how many documents ``uids`` hold.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        return sum(
            self.transport.count(self.index, {"query": view_query(group)})
            for group in self._groups(uids)[0]
        )

    def stats(
        self,
        uids: Collection[str],
        *,
        names: Collection[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> dict[str, MetricStats]:
        """Return count, latest, min and max of each metric, computed by the server.

        Of several documents holding the min (or max), the earliest step is
        reported; ``min_step`` and ``max_step`` bound the steps considered.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        if names is not None and not names:
            return {}
        out: dict[str, MetricStats] = {}
        for group in self._groups(uids)[0]:
            query = view_query(group, names=names, min_step=min_step, max_step=max_step)
            after: Mapping[str, Any] | None = None
            while True:
                response = self.transport.search(
                    self.index, stats_body(query, after=after)
                )
                agg = response["aggregations"]["names"]
                for bucket in agg["buckets"]:
                    found = stats_from_bucket(bucket)
                    known = out.get(found.name)
                    out[found.name] = merge_stats(known, found) if known else found
                after = agg.get("after_key")
                if not agg["buckets"] or after is None:
                    break
        return {name: out[name] for name in sorted(out)}

    def values_at(self, points: Mapping[str, int], name: str) -> dict[str, float]:
        """Return the value of metric ``name`` each epoch uid logged at one step.

        Each (uid, step) is a document id, so this is one ``mget`` per batch.

        Args:
            points: Epoch uid to the step to read (usually the epoch's last).
            name: The metric.

        Returns:
            Epoch uid to value, for the epochs that logged ``name`` there.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        self._ensure_index()
        keys = {
            doc_id(MetricDoc(uid=uid, step=step, name=name, value=0.0)): uid
            for uid, step in points.items()
        }
        out: dict[str, float] = {}
        listed = list(keys)
        for start in range(0, len(listed), _MGET_BATCH):
            response = self.transport.mget(
                self.index, listed[start : start + _MGET_BATCH]
            )
            for found in response.get("docs", []):
                if found.get("found"):
                    out[keys[str(found["_id"])]] = value_from_source(found["_source"])
        return out

    def delete_uids(self, uids: Collection[str]) -> int:
        """Remove every document of ``uids`` by search and bulk delete.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        deleted = 0
        groups, limits = self._groups(uids)
        size = max(1, min(limits.max_window, _PAGE))
        for group in groups:
            # collect every id first, then delete: the pages never see their
            # own deletes, whether or not the server has a point in time
            keys = [
                str(hit["_id"])
                for hit in self._iter_hits(view_query(group), size=size, source=False)
            ]
            for start in range(0, len(keys), _BULK_BATCH):
                part = keys[start : start + _BULK_BATCH]
                operations = [
                    {"delete": {"_index": self.index, "_id": key}} for key in part
                ]
                response = self.transport.bulk(operations, refresh=self.refresh)
                deleted += sum(
                    1
                    for item in response.get("items", [])
                    if item.get("delete", {}).get("result") == "deleted"
                )
        return deleted

    def iter_uids(self) -> Iterator[str]:
        """Yield every uid that holds documents, in order.

        Raises:
            BackendUnavailableError: If the server cannot be reached.
        """
        self._ensure_index()
        after: Mapping[str, Any] | None = None
        while True:
            response = self.transport.search(self.index, uids_body(after=after))
            agg = response["aggregations"]["uids"]
            for bucket in agg["buckets"]:
                yield str(bucket["key"]["uid"])
            after = agg.get("after_key")
            if not agg["buckets"] or after is None:
                return

    def flush(self) -> None:
        """Do nothing: a write is durable (translog) once acknowledged."""

    def close(self) -> None:
        """Close the client's connections."""
        self.transport.close()


def _conflict(doc: MetricDoc, stored: float) -> MetricConflictError:
    return MetricConflictError(
        epoch_uid=doc.uid, step=doc.step, name=doc.name, stored=stored, new=doc.value
    )


def _check_index(index: str) -> str:
    if not index or index != index.lower() or index.startswith(("_", "-", "+")):
        raise InvalidInputError(
            f"index name {index!r} must be lower case and not start with _, - or +"
        )
    return index


class ElasticMetricsIndex(_SearchMetricsIndex):
    """Metric documents in Elasticsearch 8.

    Args:
        url: ``http://HOST:PORT`` (or https).
        index: The index name.
        api_key: An API key, if the cluster needs one.
        username: A user for basic authentication.
        password: That user's password.
        client: An existing client to use instead of building one.
        refresh: The ``refresh`` of every write (``wait_for`` so the next
            query sees it).
        refresh_interval: The index's refresh interval, set when this creates
            the index (the server's default when None): a write waits for the
            next refresh, so it bounds the latency of ``add``.
    """

    def __init__(
        self,
        url: str,
        index: str,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        client: Elasticsearch | None = None,
        refresh: str | bool = "wait_for",
        refresh_interval: str | None = REFRESH_INTERVAL,
    ) -> None:
        location = redact_uri(f"es+{url.rstrip('/')}/{_check_index(index)}")
        if client is None:
            auth: dict[str, Any] = {}
            if api_key:
                auth["api_key"] = api_key
            elif username:
                auth["basic_auth"] = (username, password or "")
            client = Elasticsearch(
                url,
                request_timeout=60,
                max_retries=3,
                retry_on_status=(429, 502, 503, 504),
                retry_on_timeout=True,
                **auth,
            )
        super().__init__(
            _ElasticTransport(client, location),
            index,
            refresh=refresh,
            refresh_interval=refresh_interval,
        )


class OpenSearchMetricsIndex(_SearchMetricsIndex):
    """Metric documents in OpenSearch 2.

    Args:
        url: ``http://HOST:PORT`` (or https).
        index: The index name.
        username: A user for basic authentication.
        password: That user's password.
        client: An existing client to use instead of building one.
        refresh: The ``refresh`` of every write (``wait_for`` so the next
            query sees it).
        refresh_interval: The index's refresh interval, set when this creates
            the index (the server's default when None): a write waits for the
            next refresh, so it bounds the latency of ``add``.
    """

    def __init__(
        self,
        url: str,
        index: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client: OpenSearch | None = None,
        refresh: str | bool = "wait_for",
        refresh_interval: str | None = REFRESH_INTERVAL,
    ) -> None:
        location = redact_uri(f"os+{url.rstrip('/')}/{_check_index(index)}")
        if client is None:
            auth: dict[str, Any] = {}
            if username:
                auth["http_auth"] = (username, password or "")
            client = OpenSearch(
                hosts=[url],
                timeout=60,
                max_retries=3,
                retry_on_status=(429, 502, 503, 504),
                retry_on_timeout=True,
                **auth,
            )
        super().__init__(
            _OpenSearchTransport(client, location),
            index,
            refresh=refresh,
            refresh_interval=refresh_interval,
        )
