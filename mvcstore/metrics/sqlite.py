"""The embedded metrics index: metric documents in one SQLite file.

Documents are rows keyed by (epoch, metric, step), with epoch uids and metric
names interned as integers so that millions of rows stay small. A view query
loads the caller's uid set into a temporary table and joins it, so it never
reads documents outside the view. NaN is stored as NULL and read back as NaN;
aggregates ignore it.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Final

from mvcstore.errors import MetricConflictError, RepositoryFormatError
from mvcstore.metrics.base import MetricDoc, MetricStats

__all__ = ["SqliteMetricsIndex", "METRICS_SCHEMA"]

logger = logging.getLogger(__name__)

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
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self.durable = durable
        self._lock = threading.RLock()
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=60.0
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={'NORMAL' if durable else 'OFF'}")
            self.conn.executescript(METRICS_SCHEMA)
            self.conn.execute(
                "CREATE TEMP TABLE IF NOT EXISTS view (e INTEGER PRIMARY KEY)"
            )
        except sqlite3.DatabaseError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: sqlite3.Error) -> RepositoryFormatError:
        return RepositoryFormatError(
            f"metrics database {self.path} cannot be used ({exc})",
            path=str(self.path),
            hint="run 'mvc fsck' to check the repository",
        )

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

    def _load_view(self, uids: Collection[str]) -> None:
        self.conn.execute("DELETE FROM temp.view")
        self.conn.executemany(
            "INSERT OR IGNORE INTO temp.view (e) SELECT n FROM uids WHERE uid = ?",
            ((uid,) for uid in uids),
        )

    def _name_filter(self, names: Collection[str] | None) -> tuple[str, list[object]]:
        if names is None:
            return "", []
        listed = list(names)
        if not listed:
            return " AND 0", []
        return f" AND n.name IN ({','.join('?' * len(listed))})", list(listed)

    def query(
        self,
        uids: Collection[str],
        *,
        names: Collection[str] | None = None,
        min_step: int | None = None,
        max_step: int | None = None,
    ) -> Iterator[MetricDoc]:
        """Yield the documents of ``uids``, ordered by step then name."""
        where, args = self._name_filter(names)
        if min_step is not None:
            where += " AND d.step >= ?"
            args.append(min_step)
        if max_step is not None:
            where += " AND d.step <= ?"
            args.append(max_step)
        with self._lock:
            try:
                self._load_view(uids)
                rows = self.conn.execute(
                    "SELECT u.uid, d.step, n.name, d.value, d.time_ns"
                    " FROM temp.view v JOIN docs d ON d.e = v.e"
                    " JOIN uids u ON u.n = d.e JOIN names n ON n.n = d.name"
                    f" WHERE 1{where} ORDER BY d.step, n.name, u.uid",
                    args,
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        for uid, step, name, value, when in rows:
            yield MetricDoc(
                uid=str(uid),
                step=int(step),
                name=str(name),
                value=math.nan if value is None else float(value),
                time_ns=int(when),
            )

    def count(self, uids: Collection[str]) -> int:
        """Return how many documents ``uids`` hold."""
        with self._lock:
            try:
                self._load_view(uids)
                row = self.conn.execute(
                    "SELECT count(*) FROM temp.view v JOIN docs d ON d.e = v.e"
                ).fetchone()
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        return int(row[0])

    def stats(
        self, uids: Collection[str], *, names: Collection[str] | None = None
    ) -> dict[str, MetricStats]:
        """Return count, latest, min and max of each metric over ``uids``."""
        where, args = self._name_filter(names)
        out: dict[str, MetricStats] = {}
        with self._lock:
            try:
                self._load_view(uids)
                groups = self.conn.execute(
                    "SELECT n.n, n.name, count(*), min(d.step), max(d.step)"
                    " FROM temp.view v JOIN docs d ON d.e = v.e"
                    f" JOIN names n ON n.n = d.name WHERE 1{where}"
                    " GROUP BY n.n ORDER BY n.name",
                    args,
                ).fetchall()
                for name_n, name, count, first, last_step in groups:
                    out[str(name)] = self._stats_of(
                        int(name_n), str(name), int(count), int(first), int(last_step)
                    )
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
        return out

    def _stats_of(
        self, name_n: int, name: str, count: int, first: int, last_step: int
    ) -> MetricStats:
        base = (
            "SELECT d.value, d.step FROM temp.view v JOIN docs d ON d.e = v.e"
            " WHERE d.name = ?"
        )
        last = self.conn.execute(
            base + " AND d.step = ? LIMIT 1", (name_n, last_step)
        ).fetchone()
        low = self.conn.execute(
            base + " AND d.value IS NOT NULL ORDER BY d.value ASC, d.step ASC LIMIT 1",
            (name_n,),
        ).fetchone()
        high = self.conn.execute(
            base + " AND d.value IS NOT NULL ORDER BY d.value DESC, d.step ASC LIMIT 1",
            (name_n,),
        ).fetchone()

        def value(row: tuple[object, ...] | None) -> tuple[float, int]:
            if row is None or row[0] is None:
                return math.nan, last_step
            return float(str(row[0])), int(str(row[1]))

        last_value, _ = value(last)
        min_value, min_step = value(low)
        max_value, max_step = value(high)
        return MetricStats(
            name=name,
            count=count,
            first_step=first,
            last_step=last_step,
            last=last_value,
            min=min_value,
            min_step=min_step,
            max=max_value,
            max_step=max_step,
        )

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
            rows = self.conn.execute(
                "SELECT u.uid FROM uids u WHERE EXISTS"
                " (SELECT 1 FROM docs d WHERE d.e = u.n) ORDER BY u.uid"
            ).fetchall()
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
                finally:
                    os.close(fd)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.conn.close()
