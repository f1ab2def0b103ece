"""The embedded backend: objects as files, refs and the epoch index in SQLite.

Objects live in pack files under ``objects/packs/`` (a commit's new objects in
one pack, published by its index: see ``stores.packs``) or as loose files under
``objects/XX/YYYY...`` (the id's hex split after two digits), each written to a
temporary file, fsynced, then renamed into place, so a reader sees a whole
object or none. Refs, the reflog, HEAD, open epochs and
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
from collections.abc import Iterable, Iterator, Sequence, Set
from pathlib import Path
from typing import Final

from mvcstore.codec import (
    DEPENDENCY_PREFIX,
    ENCODING_CHUNKED,
    FRAME_HEADER_SIZE,
    FRAME_MAGIC,
    ID_SIZE,
    KINDS,
    FramePart,
    ObjectId,
    frame_dependencies,
    join_parts,
)
from mvcstore.errors import (
    BackendUnavailableError,
    CorruptObjectError,
    InvalidInputError,
    ObjectNotFoundError,
    RefConflictError,
    RepositoryFormatError,
)
from mvcstore.objects import Epoch
from mvcstore.stores.base import EpochEntry, OpenEpoch, ReflogEntry
from mvcstore.stores.liveness import DroppedEpoch
from mvcstore.stores.packs import (
    INDEX_TMP_PREFIX,
    PACK_HEADER_SIZE,
    PACKS_DIR,
    RECORD_HEADER_SIZE,
    PackLocation,
    PackSet,
    PackWriter,
    decode_index,
    fsync_dir,
    remove_quietly,
    scan_pack,
    scan_records,
)
from mvcstore.stores.sqlite_file import database_error, open_database

__all__ = [
    "LocalObjectStore",
    "SqliteDatabase",
    "SqliteRefStore",
    "SqliteEpochIndex",
    "INDEX_SCHEMA",
]

logger = logging.getLogger(__name__)

_TMP_PREFIX: Final = "obj-"
_KIND_BY_CODE: Final = {code: kind for kind, code in KINDS.items()}

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
CREATE TABLE IF NOT EXISTS dropped (
    id      BLOB PRIMARY KEY,
    time_ns INTEGER NOT NULL,
    policy  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS unindexed (
    id BLOB PRIMARY KEY
) WITHOUT ROWID;
"""


class LocalObjectStore:
    """Objects in pack files and as loose files under one folder.

    Batches (``open_batch``) write packs; ``put_if_absent`` writes loose files.
    Both are read alike. Pack indexes are loaded when the store opens and
    again when an object is not found, so packs other writers publish are seen.

    Args:
        root: The ``objects`` folder.
        tmp: A folder on the same file system for temporary files.
        durable: When False, skip fsync (tests and throwaway repositories).
        packs: When False, batches write loose files (format 1 repositories).
    """

    def __init__(
        self, root: Path, tmp: Path, *, durable: bool = True, packs: bool = True
    ) -> None:
        self.root = root
        self.tmp = tmp
        self.durable = durable
        self.use_packs = packs
        self.location = str(root)
        self._dirty_dirs: set[Path] = set()
        self._lock = threading.Lock()
        self.packs = PackSet(root / PACKS_DIR)
        self.packs.refresh()

    def path_of(self, oid: ObjectId) -> Path:
        """Return the file that holds (or would hold) ``oid``."""
        text = oid.hex
        return self.root / text[:2] / text[2:]

    def locate(self, oid: ObjectId) -> PackLocation | None:
        """Return where ``oid`` is packed, or None if it is not (or loose only)."""
        found = self.packs.locate(oid)
        if found is None and not self.path_of(oid).exists() and self.packs.refresh():
            found = self.packs.locate(oid)
        return found

    def _missing(self, oid: ObjectId, looked_in: Path) -> ObjectNotFoundError:
        """Return the error for an absent object, naming damaged pack indexes.

        An index that fails its checksum is skipped, so the objects it lists
        read as missing; the message says so, since fsck's report and
        ``mvc fsck --repair`` are then the way back.
        """
        location = str(looked_in)
        damaged = sorted(self.packs.damaged())
        if damaged:
            names = ", ".join(f"{name}.idx" for name in damaged)
            location += f"; skipped the damaged pack index {names}, which may hold it"
        return ObjectNotFoundError(oid.hex, location=location)

    def describe(self, oid: ObjectId) -> str:
        """Return the object's pack and offset, or its file path, for messages."""
        found = self.packs.locate(oid)
        return found.describe() if found is not None else str(self.path_of(oid))

    def open_batch(self) -> _PackBatch:
        """Start a batch of new objects, written into one pack on commit."""
        return _PackBatch(self)

    def put_if_absent(self, oid: ObjectId, framed: bytes) -> bool:
        """Write the object through a temporary file, fsync and rename.

        Raises:
            BackendUnavailableError: If the file system refuses the write (for
                example when the disk is full).
        """
        if self.packs.contains(oid):
            return False
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
            remove_quietly(tmp_name)
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
        """Read the object's frame from its pack or its file.

        Raises:
            ObjectNotFoundError: If it is neither packed nor a file.
            CorruptObjectError: If its pack is shorter than its index says.
            BackendUnavailableError: If it cannot be read.
        """
        return self.get_frame_prefix(oid, None)

    def get_frame_view(self, oid: ObjectId) -> memoryview | bytes:
        """Return the object's frame, as a view of its mapped pack when packed.

        Decoders read large frames through this without copying them.

        Raises:
            ObjectNotFoundError: If it is neither packed nor a file.
            CorruptObjectError: If its pack is shorter than its index says.
            BackendUnavailableError: If it cannot be read.
        """
        found = self.packs.locate(oid)
        if found is not None:
            view = self.packs.view(found)
            if view is not None:
                return view
        return self.get_frame_prefix(oid, None)

    def get_frame_prefix(self, oid: ObjectId, size: int | None) -> bytes:
        """Read the first ``size`` bytes of the object's frame (all if None).

        Raises:
            ObjectNotFoundError: If it is neither packed nor a file.
            CorruptObjectError: If its pack is shorter than its index says.
            BackendUnavailableError: If it cannot be read.
        """
        found = self.packs.locate(oid)
        if found is not None:
            try:
                return self.packs.read(oid, found, size)
            except BackendUnavailableError:
                if found.pack.exists():
                    raise
                # gc rewrote the pack since this store loaded it: look again
                self.packs.refresh()
                moved = self.packs.locate(oid)
                if moved is None or not moved.pack.exists():
                    # gone for good (or its pack file was deleted by hand
                    # while its index stayed): missing, which repair restores
                    raise self._missing(oid, found.pack) from None
                return self.packs.read(oid, moved, size)
        path = self.path_of(oid)
        try:
            with open(path, "rb") as handle:
                return handle.read() if size is None else handle.read(size)
        except FileNotFoundError as exc:
            # another writer may have published a pack since the last look
            found = self.packs.locate(oid) if self.packs.refresh() else None
            if found is not None:
                return self.packs.read(oid, found, size)
            raise self._missing(oid, path) from exc
        except OSError as exc:
            raise BackendUnavailableError(
                self.location, f"cannot read {path}: {exc.strerror or exc}"
            ) from exc

    def has_many(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """Return the ids that are packed or whose files exist."""
        return {
            oid
            for oid in oids
            if self.packs.contains(oid) or self.path_of(oid).exists()
        }

    def iter_ids(self) -> Iterator[ObjectId]:
        """Yield every stored object's id once, skipping stray files."""
        self.packs.refresh()
        packed = set(self.packs.iter_ids())
        yield from packed
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
                    oid = ObjectId.from_hex(text)
                except InvalidInputError:
                    continue
                if oid not in packed:
                    yield oid

    def has_loose_objects(self) -> bool:
        """Return whether any fan-out folder of loose objects exists."""
        try:
            with os.scandir(self.root) as entries:
                return any(len(entry.name) == 2 and entry.is_dir() for entry in entries)
        except FileNotFoundError:
            return False

    def delete(self, oid: ObjectId) -> None:
        """Remove an object (garbage collection only); see ``delete_many``."""
        self.delete_many([oid])

    def delete_many(self, oids: Iterable[ObjectId]) -> None:
        """Remove objects (garbage collection only).

        Loose files are unlinked. A pack holding a removed object is rewritten
        whole, never edited in place: its other objects are copied into a new
        pack, which is made durable and published before the old pack's index
        and then the old pack are removed, so every other object stays readable
        throughout. The new pack keeps the old one's modification time, so the
        objects it holds do not look younger to the next gc.

        An object the rewritten pack holds only in part (the pack is shorter
        than its index says) is unreadable already and is not copied.

        Raises:
            BackendUnavailableError: If a pack cannot be read or written.
            CorruptObjectError: If a pack's index is damaged.
        """
        self.packs.refresh()
        doomed: dict[str, set[bytes]] = {}
        for oid in oids:
            remove_quietly(self.path_of(oid))
            found = self.packs.locate(oid)
            if found is not None:
                doomed.setdefault(found.pack.stem, set()).add(oid.raw)
        for name, raws in doomed.items():
            self._rewrite_pack(name, raws)

    def _rewrite_pack(self, name: str, doomed: set[bytes]) -> None:
        folder = self.packs.folder
        old_pack, old_index = folder / f"{name}.pack", folder / f"{name}.idx"
        try:
            entries, _ = decode_index(old_index.read_bytes(), where=str(old_index))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise BackendUnavailableError(
                self.location, f"cannot read {old_index}: {exc.strerror or exc}"
            ) from exc
        try:
            mtime = old_pack.stat().st_mtime
        except FileNotFoundError:
            # the pack file is gone and its index names nothing readable: the
            # index goes too, so that its objects can be stored again
            logger.warning("pack %s is missing: removing its index", old_pack)
            self.packs.forget(name)
            remove_quietly(old_index)
            if self.durable:
                fsync_dir(folder)
            return
        keep = sorted(
            ((raw, where) for raw, where in entries.items() if raw not in doomed),
            key=lambda item: item[1][0],
        )
        writer: PackWriter | None = None
        if keep:
            writer = PackWriter(folder, self.tmp, durable=self.durable)
            try:
                with open(old_pack, "rb") as handle:
                    for raw, (offset, length) in keep:
                        data = os.pread(handle.fileno(), length, offset)
                        if len(data) != length:
                            # cut short, so unreadable already: fsck reports it
                            # missing from now on, and repair can restore it
                            logger.warning(
                                "dropping %s while rewriting %s: the pack is"
                                " shorter than its index says",
                                raw.hex(),
                                old_pack,
                            )
                            continue
                        writer.add(ObjectId(raw), [data])
                fresh = writer.finish()
                if fresh:
                    os.utime(writer.path, (mtime, mtime))
            except OSError as exc:
                writer.discard()
                raise BackendUnavailableError(
                    self.location, f"cannot rewrite {old_pack}: {exc.strerror or exc}"
                ) from exc
            except BaseException:
                writer.discard()
                raise

        # the new pack is durable and published first: a crash from here on
        # leaves duplicates or an old pack without index, both garbage
        self.packs.forget(name)
        if writer is not None and fresh:
            self.packs.publish(writer.name, fresh, writer.size)
        remove_quietly(old_index)
        remove_quietly(old_pack)
        if self.durable:
            fsync_dir(folder)
        logger.debug("rewrote %s without %d objects", name, len(doomed))

    def refresh(self) -> None:
        """Load packs written and forget packs removed since the last look."""
        self.packs.refresh()

    def flush(self) -> None:
        """Fsync every folder that received a new object since the last flush."""
        with self._lock:
            dirs, self._dirty_dirs = self._dirty_dirs, set()
        # no loose file written: nothing to make durable (packs fsync their own)
        if not self.durable or not dirs:
            return
        for folder in sorted(dirs | {self.root}):
            try:
                fsync_dir(folder)
            except OSError as exc:
                raise BackendUnavailableError(
                    self.location,
                    f"cannot make {folder} durable: {exc.strerror or exc}",
                    hint="free disk space or fix permissions, then commit again",
                ) from exc

    def stat_object(self, oid: ObjectId) -> tuple[int, float]:
        """Return the object's stored size and its file's (or pack's) time.

        Raises:
            ObjectNotFoundError: If the object is not stored.
        """
        found = self.locate(oid)
        if found is not None:
            try:
                return found.length, found.pack.stat().st_mtime
            except FileNotFoundError as exc:
                raise self._missing(oid, found.pack) from exc
        path = self.path_of(oid)
        try:
            info = path.stat()
        except FileNotFoundError as exc:
            raise self._missing(oid, path) from exc
        return info.st_size, info.st_mtime

    def object_kind(self, oid: ObjectId) -> str | None:
        """Return the kind in the object's frame header, or None if unsure.

        Raises:
            ObjectNotFoundError: If the file does not exist.
        """
        try:
            head = self.get_frame_prefix(oid, FRAME_HEADER_SIZE)
        except (OSError, BackendUnavailableError, CorruptObjectError):
            return None
        if len(head) < FRAME_HEADER_SIZE or head[:4] != FRAME_MAGIC or head[4] != 1:
            return None
        return _KIND_BY_CODE.get(head[5])

    def frame_dependencies(self, oid: ObjectId) -> list[ObjectId]:
        """Return the objects the frame of ``oid`` needs: its base or chunks.

        Only the start of a frame is read, except for a chunked frame, which
        is its chunk table.

        Raises:
            ObjectNotFoundError: If ``oid`` is not stored.
            CorruptObjectError: If its frame cannot be parsed.
        """
        head = self.get_frame_prefix(oid, DEPENDENCY_PREFIX)
        if len(head) > FRAME_HEADER_SIZE and head[6] == ENCODING_CHUNKED:
            head = self.get_framed(oid)
        try:
            return frame_dependencies(head)
        except CorruptObjectError as exc:
            raise CorruptObjectError(
                oid.hex, exc.reason, location=self.describe(oid)
            ) from exc

    def check_packs(self) -> tuple[list[tuple[ObjectId | None, str]], int]:
        """Check every pack file against its index, for fsck.

        Returns:
            The faults found (the object concerned, or None for a whole pack or
            index, and what is wrong), and how many objects the packs without
            an index hold: garbage a crash between a pack and its index left.
        """
        self.packs.refresh()
        faults: list[tuple[ObjectId | None, str]] = [
            (None, f"pack index {self.packs.folder / name}.idx {detail}")
            for name, detail in sorted(self.packs.damaged().items())
        ]
        for path, _ in sorted(self.packs.packs()):
            faults.extend(self.packs.check(path))
        garbage = sum(len(scan_records(path)) for path in self.packs.orphans())
        return faults, garbage

    def drop_damaged_indexes(self, *, troubled: Set[str] = frozenset()) -> list[Path]:
        """Remove each damaged pack index whose pack holds nothing unique.

        A pack whose index does not load is unreadable. Its index is removed,
        leaving the pack as garbage for gc (as if a crash had cut it off
        before its index), only when its records read without the index run
        whole to the end of the file, every id they name is stored elsewhere,
        and none of those ids is in ``troubled`` (the ids fsck still reports
        after a repair); or when the pack is gone or too short to hold a
        single record, so that nothing can be lost. Any doubt keeps the index,
        and the pack reported.

        Returns:
            The indexes removed.
        """
        self.packs.refresh()
        removed: list[Path] = []
        for name in sorted(self.packs.damaged()):
            index = self.packs.folder / f"{name}.idx"
            pack = self.packs.folder / f"{name}.pack"
            records, whole = scan_pack(pack)
            ids = set(records)
            try:
                # no record fits in it: the pack holds nothing to lose
                size = pack.stat().st_size
                holds_nothing = size < PACK_HEADER_SIZE + RECORD_HEADER_SIZE
            except FileNotFoundError:
                holds_nothing = True
            if not holds_nothing and (
                not whole
                or not ids
                or len(self.has_many(ids)) < len(ids)
                or any(oid.hex in troubled for oid in ids)
            ):
                continue
            remove_quietly(index)
            if self.durable:
                fsync_dir(self.packs.folder)
            logger.warning(
                "removed damaged pack index %s: its objects are elsewhere", index
            )
            removed.append(index)
        self.packs.refresh()
        return removed

    def rewrite_faulty_packs(self, *, troubled: Set[str] = frozenset()) -> list[Path]:
        """Rewrite each pack whose header or length is wrong, its objects sound.

        Objects are read through the index, so a pack whose header was
        damaged, or that has bytes past what its index covers, still serves
        every object, yet fsck reports it as a whole. Such a pack is rewritten
        (as gc does: a new pack published first, then the old one removed)
        when its check names no single object and none of its objects is in
        ``troubled`` (the ids fsck still reports after a repair).

        Returns:
            The packs rewritten.
        """
        self.packs.refresh()
        rewritten: list[Path] = []
        for path, _ in sorted(self.packs.packs()):
            faults = self.packs.check(path)
            if not faults or any(oid is not None for oid, _ in faults):
                continue
            index = path.with_suffix(".idx")
            try:
                entries, _ = decode_index(index.read_bytes(), where=str(index))
            except (OSError, CorruptObjectError):
                continue
            if any(raw.hex() in troubled for raw in entries):
                continue
            try:
                self._rewrite_pack(path.stem, set())
            except BackendUnavailableError as exc:
                logger.warning("cannot rewrite pack %s: %s", path, exc)
                continue
            logger.warning("rewrote pack %s: %s", path, "; ".join(f for _, f in faults))
            rewritten.append(path)
        return rewritten

    def stale_temporaries(self, *, older_than_s: float) -> list[Path]:
        """Return temporary files, and packs without index, left by dead writers."""
        now = time.time()
        out = []
        for path in [
            *self.tmp.glob(f"{_TMP_PREFIX}*"),
            *self.tmp.glob(f"{INDEX_TMP_PREFIX}*"),
            *self.packs.orphans(),
        ]:
            try:
                if now - path.stat().st_mtime > older_than_s:
                    out.append(path)
            except FileNotFoundError:
                continue
        return out


class _PackBatch:
    """A batch of a ``LocalObjectStore``: one pack, published on commit.

    Frames are written to the pack as they are put, from any thread; nothing
    is readable before ``commit`` has made the pack and its index durable.
    """

    def __init__(self, store: LocalObjectStore) -> None:
        self.store = store
        self._ids: set[bytes] = set()
        self._lock = threading.Lock()
        self._writer: PackWriter | None = None
        # most repositories hold no loose object: then no file is looked for
        self._loose = store.has_loose_objects()
        if store.use_packs:
            store.packs.refresh()
            self._writer = PackWriter(
                store.packs.folder, store.tmp, durable=store.durable
            )

    def put(self, oid: ObjectId, parts: Sequence[FramePart]) -> bool:
        """Add a frame to the pack unless ``oid`` is stored or already added.

        Raises:
            BackendUnavailableError: If the file system refuses the write.
        """
        if self._stored(oid):
            return False
        with self._lock:
            if oid.raw in self._ids:
                return False
            self._ids.add(oid.raw)
            if self._writer is None:
                return self.store.put_if_absent(oid, join_parts(parts))
            self._writer.add(oid, parts)
        return True

    def has(self, oid: ObjectId) -> bool:
        """Return whether ``oid`` is stored or already in this batch."""
        return oid.raw in self._ids or self._stored(oid)

    def _stored(self, oid: ObjectId) -> bool:
        return self.store.packs.contains(oid) or (
            self._loose and self.store.path_of(oid).exists()
        )

    def commit(self) -> None:
        """Write the pack's index and publish its objects.

        Raises:
            BackendUnavailableError: If a write or fsync fails.
        """
        if self._writer is not None:
            entries = self._writer.finish()
            if entries:
                self.store.packs.publish(self._writer.name, entries, self._writer.size)
        else:
            self.store.flush()

    def abort(self) -> None:
        """Remove the unfinished pack."""
        if self._writer is not None:
            self._writer.discard()


class SqliteDatabase:
    """One SQLite file shared by the ref store and the epoch index.

    Opened by the rules of ``mvcstore.stores.sqlite_file``: created only with
    the repository, refused when missing or empty later, read-only where it
    cannot be written.

    Args:
        path: The database file.
        durable: ``synchronous=FULL`` when True, ``OFF`` otherwise.
        create: The repository is being created: make the file.
    """

    def __init__(
        self,
        path: Path,
        *,
        durable: bool = True,
        create: bool = False,
        repository: str | None = None,
    ) -> None:
        self.path = path
        self._lock = threading.RLock()
        self.conn, self.read_only = open_database(
            path,
            what="database",
            create=create,
            table="refs",
            schema=INDEX_SCHEMA,
            pragmas=(
                "PRAGMA journal_mode=WAL",
                f"PRAGMA synchronous={'FULL' if durable else 'OFF'}",
                "PRAGMA foreign_keys=ON",
            ),
        )
        if repository is not None:
            try:
                self._bind(repository, create=create)
            except BaseException:
                self.conn.close()
                raise

    def _bind(self, repository: str, *, create: bool) -> None:
        """Record, or check, the id of the repository this file belongs to.

        An index from another repository (or a new one) would show other
        sessions, or none, and gc would take this repository's objects for
        garbage: it is refused. Repositories made before ids were written
        have none in their config and are not checked.
        """
        try:
            if create:
                self.conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('repository', ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (repository,),
                )
                return
            rows = self.conn.execute(
                "SELECT value FROM meta WHERE key = 'repository'"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise database_error(self.path, exc) from exc
        found = str(rows[0][0]) if rows else None
        if found != repository:
            raise RepositoryFormatError(
                f"database {self.path} is not this repository's: it names"
                f" repository {found or '(none)'}, config.json names {repository}",
                path=str(self.path),
                hint="restore this repository's index.sqlite (with its -wal file)"
                " from a backup; the objects are untouched",
            )

    def execute(
        self, sql: str, args: Sequence[object] = ()
    ) -> list[tuple[object, ...]]:
        """Run one statement and return every row.

        Raises:
            RepositoryFormatError: If the database is damaged.
            BackendUnavailableError: If the disk is full or the file read-only.
        """
        with self._lock:
            try:
                return self.conn.execute(sql, args).fetchall()
            except sqlite3.DatabaseError as exc:
                raise database_error(self.path, exc) from exc

    def transaction(self) -> _Transaction:
        """Return a context manager running its statements in one write lock."""
        return _Transaction(self)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self.conn.close()


class _Transaction:
    def __init__(self, db: SqliteDatabase) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db._lock.acquire()
        try:
            self.db.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self.db._lock.release()
            raise database_error(self.db.path, exc) from exc
        return self.db.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.db.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
        except sqlite3.Error as failed:
            # a failed COMMIT (a full disk) may leave the transaction open
            if self.db.conn.in_transaction:
                self.db.conn.execute("ROLLBACK")
            raise database_error(self.db.path, failed) from failed
        finally:
            self.db._lock.release()
        if isinstance(exc, sqlite3.Error):
            raise database_error(self.db.path, exc) from exc


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

    @property
    def read_only(self) -> bool:
        """Whether the database was opened read-only (a folder not writable)."""
        return self.db.read_only

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

    def add_dropped(
        self, oids: Iterable[ObjectId], *, time_ns: int, policy: str
    ) -> int:
        """Record epochs whose weights were dropped, in one transaction.

        Returns:
            How many epochs were newly recorded (earlier drops are kept).
        """
        added = 0
        with self.db.transaction() as conn:
            for oid in dict.fromkeys(oids):
                cursor = conn.execute(
                    "INSERT OR IGNORE INTO dropped (id, time_ns, policy)"
                    " VALUES (?, ?, ?)",
                    (oid.raw, time_ns, policy),
                )
                added += cursor.rowcount
        return added

    def get_dropped(self, oids: Iterable[ObjectId]) -> dict[ObjectId, DroppedEpoch]:
        """Return the drop records of those of ``oids`` that were dropped."""
        out: dict[ObjectId, DroppedEpoch] = {}
        for row in _rows_with_ids(
            self.db, "SELECT id, time_ns, policy FROM dropped", oids
        ):
            record = _dropped(row)
            out[record.id] = record
        return out

    def iter_dropped(self) -> Iterator[DroppedEpoch]:
        """Yield every drop record, oldest first."""
        rows = self.db.execute(
            "SELECT id, time_ns, policy FROM dropped ORDER BY time_ns, id"
        )
        for row in rows:
            yield _dropped(row)

    def delete(self, oids: Iterable[ObjectId]) -> None:
        """Remove epochs and their parent links from the index.

        Each id is remembered in ``unindexed`` until ``forget_unindexed``, so
        that gc stopped between the rows and the objects is told apart from
        an index that lost epochs (see ``gc``).
        """
        raws = [(oid.raw,) for oid in oids]
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM epochs WHERE id = ?", raws)
            conn.executemany("DELETE FROM epoch_parents WHERE child = ?", raws)
            conn.executemany(
                "INSERT INTO unindexed (id) VALUES (?) ON CONFLICT DO NOTHING", raws
            )

    def unindexed(self, oids: Iterable[ObjectId]) -> set[ObjectId]:
        """Return those of ``oids`` whose rows ``delete`` removed."""
        rows = _rows_with_ids(self.db, "SELECT id FROM unindexed", oids)
        return {_req_oid(row[0]) for row in rows}

    def forget_unindexed(self, oids: Iterable[ObjectId]) -> None:
        """Drop the memory of removed rows (once their objects are gone)."""
        raws = [(oid.raw,) for oid in oids]
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM unindexed WHERE id = ?", raws)


def _rows_with_ids(
    db: SqliteDatabase, select: str, oids: Iterable[ObjectId]
) -> Iterator[tuple[object, ...]]:
    """Yield the rows of ``select`` whose ``id`` is one of ``oids``.

    The ids go in batches of 500, under SQLite's limit on parameters.
    """
    wanted = [oid.raw for oid in dict.fromkeys(oids)]
    for start in range(0, len(wanted), 500):
        batch = wanted[start : start + 500]
        yield from db.execute(
            f"{select} WHERE id IN ({','.join('?' * len(batch))})", batch
        )


def _dropped(row: tuple[object, ...]) -> DroppedEpoch:
    raw, when, policy = row
    return DroppedEpoch(id=_req_oid(raw), time_ns=int(str(when)), policy=str(policy))
