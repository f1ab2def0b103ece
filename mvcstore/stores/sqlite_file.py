"""Opening the repository's embedded SQLite files, and what their errors mean.

``index.sqlite`` (refs, reflog, epoch index) and ``metrics.sqlite`` (metric
documents) are opened by the same rules:

- A file is created only when the repository is. Opened later, a missing
  file, or one without its tables (emptied, or replaced by a new file), is an
  error: opened as new, it would show an empty repository, and gc would then
  take every object for garbage.
- A file the process cannot write (a read-only mount, a backup used as a
  repair source) is opened read-only; reading works, writing fails with a
  message that says so.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from mvcstore.errors import BackendUnavailableError, RepositoryFormatError

__all__ = ["connect", "look", "open_database", "database_error", "writable"]

TIMEOUT_S: Final = 60.0
"""How long a writer waits for another writer's lock."""


def writable(path: Path) -> bool:
    """Return whether ``path`` (and the folder holding it) can be written.

    SQLite writes its ``-wal`` and ``-shm`` files beside the database, so the
    folder must be writable too.
    """
    return os.access(path.parent, os.W_OK) and (
        not path.exists() or os.access(path, os.W_OK)
    )


def connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """Open one more connection to a database that ``open_database`` checked.

    Read-only, the file is opened ``immutable`` when no write-ahead log holds
    changes (SQLite could not create its shared-memory file), else ``mode=ro``.
    """
    if not read_only:
        return sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=TIMEOUT_S
        )
    wal = path.with_name(f"{path.name}-wal")
    pending = wal.exists() and wal.stat().st_size > 0
    return _connect_uri(path, "mode=ro" if pending else "immutable=1")


def look(path: Path) -> sqlite3.Connection:
    """Open a connection that reads and never changes the file or its log.

    A writable connection's close folds the write-ahead log into the file and
    deletes it; this one does not. Where the folder cannot be written, it is
    opened as ``connect(read_only=True)`` does.
    """
    if writable(path):
        return _connect_uri(path, "mode=ro")
    return connect(path, read_only=True)


def _connect_uri(path: Path, query: str) -> sqlite3.Connection:
    return sqlite3.connect(
        f"{path.absolute().as_uri()}?{query}",
        uri=True,
        isolation_level=None,
        check_same_thread=False,
        timeout=TIMEOUT_S,
    )


def open_database(
    path: Path,
    *,
    what: str,
    create: bool,
    table: str,
    schema: str,
    pragmas: Sequence[str],
    hint_missing: str = "",
) -> tuple[sqlite3.Connection, bool]:
    """Open a database file of the repository by the module's rules.

    Args:
        path: The file.
        what: How messages name it ("database", "metrics database").
        create: The repository is being created: make the file.
        table: A table every such file has had from the first format on.
        schema: Statements creating whatever is missing (``IF NOT EXISTS``).
        pragmas: Run first on a writable connection.
        hint_missing: Added to the hint for a missing or empty file.

    Returns:
        The connection, and whether it is read-only.

    Raises:
        RepositoryFormatError: If the file is missing, empty, damaged or not
            SQLite, or cannot be read where it is.
    """
    if not create and not path.exists():
        raise RepositoryFormatError(
            f"{what} {path} is missing",
            path=str(path),
            hint=_RESTORE_HINT + hint_missing,
        )
    if create and not writable(path):
        raise RepositoryFormatError(
            f"{what} {path} cannot be made: the folder is read-only",
            path=str(path),
            hint="run the command once where the repository can be written",
        )
    read_only = not create and not writable(path)
    conn: sqlite3.Connection | None = None
    try:
        if not create:
            # a read-only look first: a writable connection's close would fold
            # a write-ahead log into a file found damaged, and delete the log
            conn = look(path)
            if not _has_table(conn, table):
                raise RepositoryFormatError(
                    f"{what} {path} lacks its tables (no '{table}' table): it is"
                    " empty or not this repository's",
                    path=str(path),
                    hint=_RESTORE_HINT + hint_missing,
                )
            if not read_only:
                conn.close()
                conn = None
        if conn is None:
            conn = connect(path, read_only=False)
            for pragma in pragmas:
                conn.execute(pragma)
            conn.executescript(schema)
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if read_only and isinstance(exc, sqlite3.OperationalError):
            raise RepositoryFormatError(
                f"{what} {path} cannot be read where it is: the folder is"
                f" read-only and SQLite could not open the file there ({exc})",
                path=str(path),
                hint="copy the repository to a folder you can write, or open it"
                " once where it can be written (that folds its write-ahead log"
                " into the file)",
            ) from exc
        raise RepositoryFormatError(
            f"{what} {path} is damaged or not SQLite ({exc})",
            path=str(path),
            hint="restore the file from a backup of the repository",
        ) from exc
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn, read_only


_RESTORE_HINT: Final = (
    "restore it (with its -wal file, if any) from a backup of the repository;"
    " the objects are untouched, and nothing was created in its place."
)


def _has_table(conn: sqlite3.Connection, table: str) -> bool:
    rows = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).fetchall()
    return bool(rows)


def database_error(
    path: Path, exc: sqlite3.Error, *, what: str = "database"
) -> RepositoryFormatError | BackendUnavailableError:
    """Return the error to raise for a failed statement on a database file."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL:
        return BackendUnavailableError(
            str(path),
            f"the disk is full ({exc})",
            hint="free disk space, then run the command again",
        )
    if code == sqlite3.SQLITE_READONLY or "readonly" in str(exc):
        return BackendUnavailableError(
            str(path),
            f"{what} {path} cannot be written here: it is read-only ({exc})",
            hint="run the command where the repository can be written, or"
            " copy the repository to a folder you can write",
        )
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return RepositoryFormatError(
            f"{what} {path} stayed locked by another writer ({exc})",
            path=str(path),
            hint="retry once the other mvc command has finished",
        )
    return RepositoryFormatError(
        f"{what} {path} cannot be used ({exc})",
        path=str(path),
        hint="run 'mvc fsck' to check the repository",
    )
