"""The embedded metrics index: metric documents in one SQLite file.

Documents are rows keyed by (epoch, metric, step), with epoch uids and metric
names interned as integers so that millions of rows stay small. A view query
loads the caller's uid set into a temporary table and joins it, epoch first,
to the primary key, so it never reads documents outside the view. Queries stream
from a connection of their own: a view of millions of documents is never held
in memory, and a concurrent query cannot change the view being read. NaN is
stored as NULL and read back as NaN; aggregates ignore it.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mvcstore.errors import (
    BackendUnavailableError,
    MetricConflictError,
    RepositoryFormatError,
)
from mvcstore.metrics.base import MetricDoc, MetricStats
from mvcstore.stores.sqlite_file import (
    connect,
    database_error,
    open_database,
    writable,
)

__all__ = ["SqliteMetricsIndex", "METRICS_SCHEMA"]

_START_OVER: Final = (
    " To go on without the lost documents instead, make it an empty file"
    " (0 bytes: 'rm' it, then 'touch' it): fsck then lists the epochs whose"
    " documents are gone."
)

logger = logging.getLogger(__name__)

_BATCH: Final = 4096
"""Rows fetched at a time by a streaming query."""

# CROSS JOIN keeps the view outermost: each of its epochs is one primary-key
# range of docs (narrowed by name and step when given), never a table scan
_VIEW_QUERY: Final = (
    "SELECT u.uid, d.step, n.name, d.value, d.time_ns"
    " FROM temp.view v CROSS JOIN docs d ON d.e = v.e"
    " JOIN uids u ON u.n = d.e JOIN names n ON n.n = d.name"
    " WHERE 1{where} ORDER BY d.step, n.name, u.uid"
)


@dataclass(frozen=True, slots=True)
class _Group:
    """One metric's aggregates over a view, before its extremes are placed."""

    name_n: int
    name: str
    count: int
    first: int
    last_step: int
    low: float | None
    high: float | None


METRICS_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS uids (
    n   INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS names (
    n    INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS docs (
    e       INTEGER NOT NULL,
    name    INTEGER NOT NULL,
    step    INTEGER NOT NULL,
    value   REAL,
    time_ns INTEGER NOT NULL,
    PRIMARY KEY (e, name, step)
) WITHOUT ROWID;
"""


class SqliteMetricsIndex:
    """Metric documents in SQLite.

    Args:
        path: The database file.
        durable: ``synchronous=NORMAL`` plus a checkpoint on ``flush`` when
            True; ``OFF`` otherwise.
        create: Make the file (now) if it is missing. Otherwise a missing
            file, or one without the tables, is an error when first used; an
            empty file (0 bytes) starts an empty index.
    """

    def __init__(
        self, path: Path, *, durable: bool = True, create: bool = False
    ) -> None:
        self.path = path
        self.durable = durable
        self.create = create
        self.read_only = False
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        if create and not path.exists() and writable(path):
            # made now, with the repository: a file missing later is a loss
            _ = self.conn

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection, opened on first use.

        Opening late keeps a damaged metrics file from blocking commands that
        never read metric documents (log, checkout).
        """
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            return self._conn

    def _connect(self) -> sqlite3.Connection:
        # an empty file is what 'touch' makes to start over without the lost
        # documents (the hint for a missing file says so); fsck then names the
        # epochs whose documents are gone
        create = self.create or (self.path.exists() and self.path.stat().st_size == 0)
        conn, self.read_only = open_database(
            self.path,
            what="metrics database",
            create=create,
            table="docs",
            schema=METRICS_SCHEMA,
            pragmas=(
                "PRAGMA journal_mode=WAL",
                f"PRAGMA synchronous={'NORMAL' if self.durable else 'OFF'}",
            ),
            hint_missing=_START_OVER,
        )
        try:
            conn.execute("CREATE TEMP TABLE IF NOT EXISTS view (e INTEGER PRIMARY KEY)")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise self._error(exc) from exc
        return conn

    def _error(
        self, exc: sqlite3.Error
    ) -> RepositoryFormatError | BackendUnavailableError:
        return database_error(self.path, exc, what="metrics database")

    def add(self, docs: Sequence[MetricDoc]) -> int:
        """Store documents in one transaction; equal re-logs are skipped.

        Returns:
            How many documents were new.

        Raises:
            MetricConflictError: If a stored document has another value; the
                whole batch is rolled back.
        """
        if not docs:
            return 0
        added = 0
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    added = self._add_locked(docs)
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # a failed COMMIT (a full disk) may leave the transaction open
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise self._error(exc) from exc
        logger.debug("metrics: %d of %d documents new", added, len(docs))
        return added

    def _add_locked(self, docs: Sequence[MetricDoc]) -> int:
        uid_ids = self._intern("uids", "uid", {doc.uid for doc in docs})
        name_ids = self._intern("names", "name", {doc.name for doc in docs})
        added = 0
        for doc in docs:
            value = None if math.isnan(doc.value) else doc.value
            cursor = self.conn.execute(
                "INSERT INTO docs (e, name, step, value, time_ns)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (uid_ids[doc.uid], name_ids[doc.name], doc.step, value, doc.time_ns),
            )
            if cursor.rowcount == 1:
                added += 1
                continue
            row = self.conn.execute(
                "SELECT value FROM docs WHERE e = ? AND name = ? AND step = ?",
                (uid_ids[doc.uid], name_ids[doc.name], doc.step),
            ).fetchone()
            stored = math.nan if row[0] is None else float(row[0])
            if not doc.same_value(stored):
                raise MetricConflictError(
                    epoch_uid=doc.uid,
                    step=doc.step,
                    name=doc.name,
                    stored=stored,
                    new=doc.value,
                )
        return added

    def _intern(self, table: str, column: str, values: set[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for value in values:
            self.conn.execute(
                f"INSERT INTO {table} ({column}) VALUES (?) ON CONFLICT DO NOTHING",
                (value,),
            )
            row = self.conn.execute(
                f"SELECT n FROM {table} WHERE {column} = ?", (value,)
            ).fetchone()
            out[value] = int(row[0])
        return out

    def _load_view(
        self, uids: Collection[str], conn: sqlite3.Connection | None = None
    ) -> None:
        conn = conn or self.conn
        conn.execute("DELETE FROM temp.view")
        conn.executemany(
            "INSERT OR IGNORE INTO temp.view (e) SELECT n FROM uids WHERE uid = ?",
            ((uid,) for uid in uids),
        )

    def _name_ids(
        self, names: Collection[str] | None, conn: sqlite3.Connection | None = None
    ) -> list[int] | None:
        """Return the interned ids of ``names`` that exist (None: every name)."""
        if names is None:
            return None
        conn = conn or self.conn
        out: list[int] = []
        for name in dict.fromkeys(names):
            row = conn.execute("SELECT n FROM names WHERE name = ?", (name,)).fetchone()
            if row is not None:
                out.append(int(row[0]))
        return out

    @staticmethod
    def _filters(
        name_ids: list[int] | None, min_step: int | None, max_step: int | None
    ) -> tuple[str, list[object]]:
        # name ids, not names: the join then probes the primary key with
        # (e, name) and, given steps, a step range inside it
        where = ""
        args: list[object] = []
        if name_ids is not None:
            where += f" AND d.name IN ({','.join('?' * len(name_ids))})"
            args.extend(name_ids)
        if min_step is not None:
            where += " AND d.step >= ?"
            args.append(min_step)
        if max_step is not None:
            where += " AND d.step <= ?"
            args.append(max_step)
        return where, args

    def _reader(self) -> sqlite3.Connection:
        """Open a connection of its own for one streaming query."""
        # the main connection creates the schema: a reader must not come first
        _ = self.conn
        conn = connect(self.path, read_only=self.read_only)
        conn.execute("CREATE TEMP TABLE view (e INTEGER PRIMARY KEY)")
        return conn

    def query(
        self,
        uids: Collection[str],
        *,
        names: Collection[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> Iterator[MetricDoc]:
        """Yield the documents of ``uids``, ordered by step then name.

        Documents stream in batches from one read transaction: memory stays
        flat however large the view, and every document read was committed
        before the first one was.
        """
        try:
            conn = self._reader()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            conn.execute("BEGIN")
            name_ids = self._name_ids(names, conn)
            if name_ids == []:
                return
            self._load_view(uids, conn)
            where, args = self._filters(name_ids, min_step, max_step)
            cursor = conn.execute(_VIEW_QUERY.format(where=where), args)
            while rows := cursor.fetchmany(_BATCH):
                for uid, step, name, value, when in rows:
                    yield MetricDoc(
                        uid=str(uid),
                        step=int(step),
                        name=str(name),
                        value=math.nan if value is None else float(value),
                        time_ns=int(when),
                    )
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()

    def explain_query(
        self, *, names: Collection[str] | None = None, steps: bool = False
    ) -> list[str]:
        """Return SQLite's plan for a view query, one line per step.

        Args:
            names: The metric names the query filters on (None: no filter).
            steps: Whether it filters on a step range.

        Returns:
            The ``detail`` column of ``EXPLAIN QUERY PLAN``.
        """
        name_ids = None if names is None else [0] * max(1, len(names))
        where, args = self._filters(
            name_ids, 0 if steps else None, 1 if steps else None
        )
        with self._lock:
            try:
                rows = self.conn.execute(
                    "EXPLAIN QUERY PLAN " + _VIEW_QUERY.format(where=where), args
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        return [str(row[-1]) for row in rows]

    def count(self, uids: Collection[str]) -> int:
        """Return how many documents ``uids`` hold."""
        with self._lock:
            try:
                self._load_view(uids)
                row = self.conn.execute(
                    "SELECT count(*) FROM temp.view v CROSS JOIN docs d ON d.e = v.e"
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        return int(row[0])

    def stats(
        self,
        uids: Collection[str],
        *,
        names: Collection[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> dict[str, MetricStats]:
        """Return count, latest, min and max of each metric over ``uids``.

        Args:
            uids: The view.
            names: Only these metrics (all when None).
            min_step: Only documents at this step or later.
            max_step: Only documents at this step or earlier.

        Returns:
            The aggregates by metric name, in name order.
        """
        out: dict[str, MetricStats] = {}
        with self._lock:
            try:
                name_ids = self._name_ids(names)
                if name_ids == []:
                    return out
                self._load_view(uids)
                where, args = self._filters(name_ids, min_step, max_step)
                groups = self.conn.execute(
                    "SELECT d.name, count(*), min(d.step), max(d.step),"
                    " min(d.value), max(d.value)"
                    " FROM temp.view v CROSS JOIN docs d ON d.e = v.e"
                    f" WHERE 1{where} GROUP BY d.name",
                    args,
                ).fetchall()
                labels = dict(self.conn.execute("SELECT n, name FROM names"))
                for name_n, count, first, last_step, low, high in groups:
                    group = _Group(
                        name_n=int(name_n),
                        name=str(labels[name_n]),
                        count=int(count),
                        first=int(first),
                        last_step=int(last_step),
                        low=None if low is None else float(low),
                        high=None if high is None else float(high),
                    )
                    out[group.name] = self._stats_of(group, min_step, max_step)
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        return dict(sorted(out.items()))

    def _stats_of(
        self, group: _Group, min_step: int | None, max_step: int | None
    ) -> MetricStats:
        where, args = self._filters([group.name_n], min_step, max_step)
        last = self.conn.execute(
            "SELECT d.value FROM temp.view v CROSS JOIN docs d ON d.e = v.e"
            " WHERE d.name = ? AND d.step = ? LIMIT 1",
            (group.name_n, group.last_step),
        ).fetchone()

        def extreme(value: float | None) -> tuple[float, int]:
            # of several documents holding the extreme, the earliest step wins
            if value is None:
                return math.nan, group.last_step
            row = self.conn.execute(
                "SELECT min(d.step) FROM temp.view v CROSS JOIN docs d ON d.e = v.e"
                f" WHERE 1{where} AND d.value = ?",
                [*args, value],
            ).fetchone()
            return value, int(row[0])

        min_value, min_at = extreme(group.low)
        max_value, max_at = extreme(group.high)
        return MetricStats(
            name=group.name,
            count=group.count,
            first_step=group.first,
            last_step=group.last_step,
            last=math.nan if last is None or last[0] is None else float(last[0]),
            min=min_value,
            min_step=min_at,
            max=max_value,
            max_step=max_at,
        )

    def values_at(self, points: Mapping[str, int], name: str) -> dict[str, float]:
        """Return the value of metric ``name`` that each epoch logged at one step.

        Each (uid, step) is one primary-key look-up, however many documents
        the epochs hold.

        Args:
            points: Epoch uid to the step to read (usually the epoch's last).
            name: The metric.

        Returns:
            Epoch uid to value, for the epochs that logged ``name`` there.
        """
        out: dict[str, float] = {}
        try:
            conn = self._reader()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            conn.execute("BEGIN")
            name_ids = self._name_ids([name], conn)
            if not name_ids:
                return out
            conn.execute("CREATE TEMP TABLE wanted (e INTEGER PRIMARY KEY, step INT)")
            conn.executemany(
                "INSERT OR IGNORE INTO temp.wanted (e, step)"
                " SELECT n, ? FROM uids WHERE uid = ?",
                ((step, uid) for uid, step in points.items()),
            )
            rows = conn.execute(
                "SELECT u.uid, d.value FROM temp.wanted w CROSS JOIN docs d"
                " ON d.e = w.e AND d.name = ? AND d.step = w.step"
                " JOIN uids u ON u.n = w.e",
                (name_ids[0],),
            )
            for uid, value in rows:
                out[str(uid)] = math.nan if value is None else float(value)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            conn.close()
        return out

    def delete_uids(self, uids: Collection[str]) -> int:
        """Remove every document of ``uids``."""
        with self._lock:
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                self._load_view(uids)
                cursor = self.conn.execute(
                    "DELETE FROM docs WHERE e IN (SELECT e FROM temp.view)"
                )
                self.conn.execute(
                    "DELETE FROM uids WHERE n IN (SELECT e FROM temp.view)"
                )
                self.conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # an open transaction would keep half a delete and refuse every
                # later write on this connection
                if self.conn.in_transaction:
                    self.conn.execute("ROLLBACK")
                raise self._error(exc) from exc
        return int(cursor.rowcount)

    def iter_uids(self) -> Iterator[str]:
        """Yield every uid that holds documents."""
        with self._lock:
            try:
                rows = self.conn.execute(
                    "SELECT u.uid FROM uids u WHERE EXISTS"
                    " (SELECT 1 FROM docs d WHERE d.e = u.n) ORDER BY u.uid"
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        for (uid,) in rows:
            yield str(uid)

    def flush(self) -> None:
        """Make every document added so far durable."""
        if not self.durable:
            return
        # synchronous=NORMAL leaves committed transactions in an unsynced WAL;
        # fsyncing the WAL itself makes them durable even when a reader blocks
        # a checkpoint
        with self._lock:
            for suffix in ("-wal", ""):
                try:
                    fd = os.open(f"{self.path}{suffix}", os.O_RDONLY)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._error(sqlite3.OperationalError(str(exc))) from exc
                try:
                    os.fsync(fd)
                except OSError as exc:
                    raise BackendUnavailableError(
                        str(self.path),
                        f"cannot make metric documents durable: {exc.strerror or exc}",
                        hint="free disk space or fix permissions, then retry",
                    ) from exc
                finally:
                    os.close(fd)

    def close(self) -> None:
        """Close the connection, if it was opened."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
