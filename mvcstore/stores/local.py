"""The embedded backend: objects as files, refs and the epoch index in SQLite.

Objects live under ``objects/XX/YYYY...`` (the id's hex split after two
digits), each written to a temporary file, fsynced, then renamed into place, so
a reader sees a whole object or none. Refs, the reflog, HEAD, open epochs and
the epoch index live in one SQLite database in WAL mode with
``synchronous=FULL``: a ref moved is a ref kept. This module must not know what
sessions or revisions mean.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

from mvcstore.codec import ID_SIZE, ObjectId
from mvcstore.errors import (
    BackendUnavailableError,
    InvalidInputError,
    ObjectNotFoundError,
    RefConflictError,
    RepositoryFormatError,
)
from mvcstore.objects import Epoch
from mvcstore.stores.base import EpochEntry, OpenEpoch, ReflogEntry

__all__ = [
    "LocalObjectStore",
    "SqliteDatabase",
    "SqliteRefStore",
    "SqliteEpochIndex",
    "INDEX_SCHEMA",
]

logger = logging.getLogger(__name__)

_TMP_PREFIX: Final = "obj-"

INDEX_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
    name   TEXT PRIMARY KEY,
    target BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS reflog (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    ref     TEXT NOT NULL,
    old     BLOB,
    new     BLOB,
    time_ns INTEGER NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS reflog_by_ref ON reflog (ref, seq);
CREATE TABLE IF NOT EXISTS open_epochs (
    uid        TEXT PRIMARY KEY,
    session    TEXT NOT NULL,
    base       BLOB,
    owner      TEXT NOT NULL,
    started_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS epochs (
    id      BLOB PRIMARY KEY,
    number  INTEGER NOT NULL,
    step    INTEGER NOT NULL,
    uid     TEXT NOT NULL UNIQUE,
    session TEXT NOT NULL,
    time_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS epoch_parents (
    child  BLOB NOT NULL,
    pos    INTEGER NOT NULL,
    parent BLOB NOT NULL,
    PRIMARY KEY (child, pos)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS epoch_children ON epoch_parents (parent);
"""


class LocalObjectStore:
    """Objects as files under one folder.

    Args:
        root: The ``objects`` folder.
        tmp: A folder on the same file system for temporary files.
        durable: When False, skip fsync (tests and throwaway repositories).
    """

    def __init__(self, root: Path, tmp: Path, *, durable: bool = True) -> None:
        self.root = root
        self.tmp = tmp
        self.durable = durable
        self.location = str(root)
        self._dirty_dirs: set[Path] = set()
        self._lock = threading.Lock()

    def path_of(self, oid: ObjectId) -> Path:
        """Return the file that holds (or would hold) ``oid``."""
        text = oid.hex
        return self.root / text[:2] / text[2:]

    def describe(self, oid: ObjectId) -> str:
        """Return the object's file path, for messages."""
        return str(self.path_of(oid))

    def put_if_absent(self, oid: ObjectId, framed: bytes) -> bool:
        """Write the object through a temporary file, fsync and rename.

        Raises:
            BackendUnavailableError: If the file system refuses the write (for
                example when the disk is full).
        """
        target = self.path_of(oid)
        if target.exists():
            # a crashed writer may have renamed it without the folder fsync
            with self._lock:
                self._dirty_dirs.add(target.parent)
            return False
        tmp_name = (
            self.tmp
            / f"{_TMP_PREFIX}{oid.hex[:16]}-{os.getpid()}-{threading.get_ident()}"
        )
        try:
            target.parent.mkdir(exist_ok=True)
            with open(tmp_name, "wb") as handle:
                handle.write(framed)
                handle.flush()
                if self.durable:
                    os.fsync(handle.fileno())
            # rename is atomic: readers see the whole object or no file at all
            os.replace(tmp_name, target)
        except OSError as exc:
            _remove_quietly(tmp_name)
            raise BackendUnavailableError(
                self.location,
                f"cannot write object {oid.hex}: {exc.strerror or exc}",
                hint="free disk space or fix permissions, then commit again",
            ) from exc
        with self._lock:
            self._dirty_dirs.add(target.parent)
        logger.debug("put %s (%d bytes)", oid.hex, len(framed))
        return True

    def get_framed(self, oid: ObjectId) -> bytes:
        """Read the object's file.

        Raises:
            ObjectNotFoundError: If the file does not exist.
            BackendUnavailableError: If it cannot be read.
        """
        path = self.path_of(oid)
        try:
            with open(path, "rb") as handle:
                return handle.read()
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(oid.hex, location=str(path)) from exc
        except OSError as exc:
            raise BackendUnavailableError(
                self.location, f"cannot read {path}: {exc.strerror or exc}"
            ) from exc

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """Return the ids whose files exist."""
        return {oid for oid in oids if self.path_of(oid).exists()}

    def iter_ids(self) -> Iterator[ObjectId]:
        """Yield every stored object's id, skipping stray files."""
        if not self.root.is_dir():
            return
        for fan in sorted(self.root.iterdir()):
            if len(fan.name) != 2 or not fan.is_dir():
                continue
            for entry in sorted(fan.iterdir()):
                text = fan.name + entry.name
                if len(text) != 2 * ID_SIZE:
                    continue
                try:
                    yield ObjectId.from_hex(text)
                except InvalidInputError:
                    continue

    def delete(self, oid: ObjectId) -> None:
        """Remove an object's file (garbage collection only)."""
        _remove_quietly(self.path_of(oid))

    def flush(self) -> None:
        """Fsync every folder that received a new object since the last flush."""
        with self._lock:
            dirs, self._dirty_dirs = self._dirty_dirs, set()
        if not self.durable:
            return
        for folder in sorted(dirs | {self.root}):
            _fsync_dir(folder)

    def stale_temporaries(self, *, older_than_s: float) -> list[Path]:
        """Return temporary files left by writers that died."""
        now = time.time()
        out = []
        for path in self.tmp.glob(f"{_TMP_PREFIX}*"):
            try:
                if now - path.stat().st_mtime > older_than_s:
                    out.append(path)
            except FileNotFoundError:
                continue
        return out


def _remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SqliteDatabase:
    """One SQLite file shared by the ref store and the epoch index.

    Args:
        path: The database file.
        durable: ``synchronous=FULL`` when True, ``OFF`` otherwise.
    """

    def __init__(self, path: Path, *, durable: bool = True) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=60.0
            )
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'OFF'}")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(INDEX_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise RepositoryFormatError(
                f"database {path} is damaged or not SQLite ({exc})",
                path=str(path),
                hint="restore the file from a backup, or run 'mvc fsck'",
            ) from exc

    def execute(
        self, sql: str, args: Sequence[object] = ()
    ) -> list[tuple[object, ...]]:
        """Run one statement and return every row.

        Raises:
            RepositoryFormatError: If the database is damaged.
        """
        with self._lock:
            try:
                return self.conn.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _database_error(self.path, exc) from exc

    def transaction(self) -> _Transaction:
        """Return a context manager running its statements in one write lock."""
        return _Transaction(self)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.conn.close()


def _database_error(path: Path, exc: sqlite3.Error) -> RepositoryFormatError:
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return RepositoryFormatError(
            f"database {path} stayed locked by another writer ({exc})",
            path=str(path),
            hint="retry once the other mvc command has finished",
        )
    return RepositoryFormatError(
        f"database {path} cannot be used ({exc})",
        path=str(path),
        hint="run 'mvc fsck' to check the repository",
    )


class _Transaction:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db._lock.acquire()
        try:
            self.db.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.db._lock.release()
            raise _database_error(self.db.path, exc) from exc
        return self.db.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.db.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self.db._lock.release()


def _oid(raw: object) -> ObjectId | None:
    if raw is None:
        return None
    if not isinstance(raw, bytes):
        raise RepositoryFormatError(
            f"ref database holds a non-id value {raw!r}", path="refs"
        )
    return ObjectId(raw)


def _req_oid(raw: object) -> ObjectId:
    oid = _oid(raw)
    if oid is None:
        raise RepositoryFormatError("epoch index holds a null id", path="index")
    return oid


def _raw(oid: ObjectId | None) -> bytes | None:
    return oid.raw if oid is not None else None


class SqliteRefStore:
    """Refs, reflog, HEAD and open epochs in SQLite.

    Args:
        db: The shared database.
    """

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db
        self.location = str(db.path)

    def get(self, ref: str) -> ObjectId | None:
        """Return the epoch ``ref`` points at, or None."""
        rows = self.db.execute("SELECT target FROM refs WHERE name = ?", (ref,))
        return _oid(rows[0][0]) if rows else None

    def compare_and_set(
        self,
        ref: str,
        *,
        old: ObjectId | None,
        new: ObjectId | None,
        message: str,
    ) -> None:
        """Move ``ref`` from ``old`` to ``new`` in one write transaction.

        Raises:
            RefConflictError: If ``ref`` no longer points at ``old``.
        """
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT target FROM refs WHERE name = ?", (ref,)
            ).fetchone()
            current = _oid(row[0]) if row else None
            if current != old:
                raise RefConflictError(
                    ref,
                    expected=old.hex if old else None,
                    actual=current.hex if current else None,
                    proposed=new.hex if new else None,
                )
            if new is None:
                conn.execute("DELETE FROM refs WHERE name = ?", (ref,))
            else:
                conn.execute(
                    "INSERT INTO refs (name, target) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET target = excluded.target",
                    (ref, new.raw),
                )
            conn.execute(
                "INSERT INTO reflog (ref, old, new, time_ns, message)"
                " VALUES (?, ?, ?, ?, ?)",
                (ref, _raw(old), _raw(new), time.time_ns(), message),
            )
        logger.debug("ref %s: %s -> %s", ref, old, new)

    def iter_refs(self, prefix: str = "") -> Iterator[tuple[str, ObjectId]]:
        """Yield (name, epoch) of refs starting with ``prefix``, sorted by name."""
        rows = self.db.execute(
            "SELECT name, target FROM refs WHERE substr(name, 1, ?) = ? ORDER BY name",
            (len(prefix), prefix),
        )
        for name, target in rows:
            oid = _oid(target)
            if oid is not None:
                yield str(name), oid

    def reflog(self, ref: str | None = None) -> list[ReflogEntry]:
        """Return the moves of ``ref`` (or of every ref), oldest first."""
        if ref is None:
            rows = self.db.execute(
                "SELECT ref, old, new, time_ns, message FROM reflog ORDER BY seq"
            )
        else:
            rows = self.db.execute(
                "SELECT ref, old, new, time_ns, message FROM reflog WHERE ref = ?"
                " ORDER BY seq",
                (ref,),
            )
        return [
            ReflogEntry(
                ref=str(name),
                old=_oid(old),
                new=_oid(new),
                time_ns=int(str(when)),
                message=str(message),
            )
            for name, old, new, when, message in rows
        ]

    def get_head(self) -> str | None:
        """Return the current session's name, or None."""
        rows = self.db.execute("SELECT value FROM meta WHERE key = 'HEAD'")
        return str(rows[0][0]) if rows else None

    def set_head(self, session: str) -> None:
        """Make ``session`` the current session."""
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('HEAD', ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (session,),
        )

    def set_open_epoch(self, epoch: OpenEpoch) -> None:
        """Record an open epoch (a session may have several writers)."""
        self.db.execute(
            "INSERT INTO open_epochs (session, uid, base, owner, started_ns)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (uid) DO UPDATE SET"
            " session = excluded.session, base = excluded.base,"
            " owner = excluded.owner, started_ns = excluded.started_ns",
            (epoch.session, epoch.uid, _raw(epoch.base), epoch.owner, epoch.started_ns),
        )

    def clear_open_epoch(self, session: str, uid: str) -> None:
        """Forget the open epoch ``uid`` of ``session``."""
        self.db.execute(
            "DELETE FROM open_epochs WHERE session = ? AND uid = ?", (session, uid)
        )

    def iter_open_epochs(self) -> Iterator[OpenEpoch]:
        """Yield every recorded open epoch."""
        rows = self.db.execute(
            "SELECT session, uid, base, owner, started_ns FROM open_epochs"
            " ORDER BY session, started_ns"
        )
        for row in rows:
            yield _open_epoch(row)


def _open_epoch(row: tuple[object, ...]) -> OpenEpoch:
    session, uid, base, owner, started = row
    return OpenEpoch(
        session=str(session),
        uid=str(uid),
        base=_oid(base),
        owner=str(owner),
        started_ns=int(str(started)),
    )


class SqliteEpochIndex:
    """The epoch index in SQLite: entries, parent links, prefix search.

    Args:
        db: The shared database.
    """

    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def add(self, oid: ObjectId, epoch: Epoch) -> None:
        """Index an epoch; a second add of the same epoch does nothing.

        Raises:
            InvalidInputError: If another epoch already carries the same uid.
        """
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT id FROM epochs WHERE uid = ?", (epoch.uid,)
            ).fetchone()
            if row is not None and row[0] != oid.raw:
                raise InvalidInputError(
                    f"epoch uid {epoch.uid} is already used by epoch"
                    f" {_req_oid(row[0]).hex}",
                    hint="commit with a new Session object",
                )
            conn.execute(
                "INSERT OR IGNORE INTO epochs (id, number, step, uid, session, time_ns)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (
                    oid.raw,
                    epoch.number,
                    epoch.step,
                    epoch.uid,
                    epoch.session,
                    epoch.time_ns,
                ),
            )
            conn.executemany(
                "INSERT OR IGNORE INTO epoch_parents (child, pos, parent)"
                " VALUES (?, ?, ?)",
                [
                    (oid.raw, pos, parent.raw)
                    for pos, parent in enumerate(epoch.parents)
                ],
            )

    def get_many(self, oids: Iterable[ObjectId]) -> dict[ObjectId, EpochEntry]:
        """Return the indexed entries among ``oids``."""
        wanted = list(dict.fromkeys(oids))
        out: dict[ObjectId, EpochEntry] = {}
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            marks = ",".join("?" * len(batch))
            rows = self.db.execute(
                f"SELECT id, number, step, uid, session, time_ns FROM epochs"
                f" WHERE id IN ({marks})",
                [oid.raw for oid in batch],
            )
            parents = self._parents_of([oid.raw for oid in batch])
            for raw, number, step, uid, session, when in rows:
                oid = _req_oid(raw)
                out[oid] = EpochEntry(
                    id=oid,
                    parents=parents.get(oid, ()),
                    number=int(str(number)),
                    step=int(str(step)),
                    uid=str(uid),
                    session=str(session),
                    time_ns=int(str(when)),
                )
        return out

    def _parents_of(self, raws: list[bytes]) -> dict[ObjectId, tuple[ObjectId, ...]]:
        marks = ",".join("?" * len(raws))
        rows = self.db.execute(
            f"SELECT child, parent FROM epoch_parents WHERE child IN ({marks})"
            " ORDER BY child, pos",
            raws,
        )
        out: dict[ObjectId, list[ObjectId]] = {}
        for child, parent in rows:
            out.setdefault(_req_oid(child), []).append(_req_oid(parent))
        return {key: tuple(value) for key, value in out.items()}

    def find_prefix(self, prefix: str, *, limit: int = 10) -> list[ObjectId]:
        """Return up to ``limit`` epoch ids whose hex starts with ``prefix``."""
        low = bytes.fromhex(prefix.ljust(2 * ID_SIZE, "0"))
        high = bytes.fromhex(prefix.ljust(2 * ID_SIZE, "f"))
        rows = self.db.execute(
            "SELECT id FROM epochs WHERE id BETWEEN ? AND ? ORDER BY id LIMIT ?",
            (low, high, limit),
        )
        return [_req_oid(row[0]) for row in rows]

    def ancestors(self, heads: Sequence[ObjectId]) -> set[ObjectId]:
        """Return every epoch reachable from ``heads`` through parent links."""
        if not heads:
            return set()
        seeds = " UNION ".join("SELECT ?" for _ in heads)
        rows = self.db.execute(
            f"WITH RECURSIVE reach(id) AS ({seeds}"
            " UNION SELECT p.parent FROM epoch_parents p"
            " JOIN reach r ON p.child = r.id)"
            " SELECT id FROM reach",
            [head.raw for head in heads],
        )
        return {_req_oid(row[0]) for row in rows}

    def iter_entries(self) -> Iterator[EpochEntry]:
        """Yield every indexed epoch, oldest commit first."""
        rows = self.db.execute("SELECT id FROM epochs ORDER BY time_ns, id")
        ids = [_req_oid(row[0]) for row in rows]
        for start in range(0, len(ids), 500):
            batch = self.get_many(ids[start : start + 500])
            for oid in ids[start : start + 500]:
                yield batch[oid]

    def delete(self, oids: Iterable[ObjectId]) -> None:
        """Remove epochs and their parent links from the index."""
        raws = [(oid.raw,) for oid in oids]
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM epochs WHERE id = ?", raws)
            conn.executemany("DELETE FROM epoch_parents WHERE child = ?", raws)
