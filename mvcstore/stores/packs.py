"""Pack files: many stored frames in one file, found through a sorted index.

A commit streams all of its new objects into one pack file,
``objects/packs/pack-<32 hex>.pack``, fsyncs it, then writes its index
``pack-<32 hex>.idx`` (to ``tmp/``, fsynced, renamed into place) and fsyncs the
folder: a handful of fsyncs however many objects a commit holds. A reader knows
a pack only through its index, loaded when the store opens and again when an
object is not found; a pack without an index (a writer died between the two)
is garbage, never damage. This module knows frames only as bytes under an id;
``docs/format.md`` section 5.3 gives the byte layout of both files.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import blake3
import numpy as np

from mvcstore.codec import FramePart, ObjectId
from mvcstore.errors import BackendUnavailableError, CorruptObjectError
from mvcstore.native import start_writeback

__all__ = [
    "PACKS_DIR",
    "PACK_MAGIC",
    "INDEX_MAGIC",
    "PACK_HEADER_SIZE",
    "RECORD_HEADER_SIZE",
    "PackLocation",
    "PackSet",
    "PackWriter",
    "INDEX_TMP_PREFIX",
    "scan_records",
    "scan_pack",
    "encode_index",
    "decode_index",
    "fsync_dir",
    "remove_quietly",
]

logger = logging.getLogger(__name__)

PACKS_DIR: Final = "packs"
PACK_MAGIC: Final = b"mvcp"
INDEX_MAGIC: Final = b"mvci"
PACK_VERSION: Final = 1
_PACK_HEADER: Final = struct.Struct("<4sB3x")
_RECORD: Final = struct.Struct("<32sQ")
_INDEX_HEADER: Final = struct.Struct("<4sB3xQQ")
_INDEX_ENTRY: Final = struct.Struct("<32sQQ")
_TRAILER_SIZE: Final = 32
PACK_HEADER_SIZE: Final = _PACK_HEADER.size
RECORD_HEADER_SIZE: Final = _RECORD.size
INDEX_TMP_PREFIX: Final = "idx-"
_MAPPED_PACKS: Final = 64
"""Packs kept mapped at once (least recently read first out)."""
_WRITEBACK_EVERY: Final = 8 << 20
"""A durable pack starts going to disk each time this many more bytes are in."""


@dataclass(frozen=True, slots=True)
class PackLocation:
    """Where a packed frame lies.

    Attributes:
        pack: The pack file.
        offset: The first byte of the frame in the pack.
        length: The frame's length.
    """

    pack: Path
    offset: int
    length: int

    def describe(self) -> str:
        """Return the location for messages."""
        return f"pack {self.pack} at offset {self.offset}"


def encode_index(entries: dict[bytes, tuple[int, int]], pack_size: int) -> bytes:
    """Return the bytes of a pack index.

    Args:
        entries: Raw id to (offset, length) of its frame in the pack.
        pack_size: The pack file's length.
    """
    body = bytearray(
        _INDEX_HEADER.pack(INDEX_MAGIC, PACK_VERSION, len(entries), pack_size)
    )
    for raw in sorted(entries):
        offset, length = entries[raw]
        body += _INDEX_ENTRY.pack(raw, offset, length)
    body += blake3.blake3(body).digest()
    return bytes(body)


def decode_index(
    data: bytes, *, where: str
) -> tuple[dict[bytes, tuple[int, int]], int]:
    """Parse and check a pack index.

    Returns:
        Raw id to (offset, length), and the pack size the index was made for.

    Raises:
        CorruptObjectError: If the index is malformed or its checksum fails.
    """

    def bad(reason: str) -> CorruptObjectError:
        return CorruptObjectError(None, reason, location=where)

    if len(data) < _INDEX_HEADER.size + _TRAILER_SIZE:
        raise bad("is cut short")
    if blake3.blake3(data[:-_TRAILER_SIZE]).digest() != data[-_TRAILER_SIZE:]:
        raise bad("does not match its checksum")
    magic, version, count, pack_size = _INDEX_HEADER.unpack_from(data)
    if magic != INDEX_MAGIC or version != PACK_VERSION:
        raise bad(f"has an unknown magic or version {version}")
    if len(data) != _INDEX_HEADER.size + count * _INDEX_ENTRY.size + _TRAILER_SIZE:
        raise bad(f"of {count} entries has {len(data)} bytes")
    entries: dict[bytes, tuple[int, int]] = {}
    previous = b""
    first = PACK_HEADER_SIZE + RECORD_HEADER_SIZE
    for index in range(count):
        raw, offset, length = _INDEX_ENTRY.unpack_from(
            data, _INDEX_HEADER.size + index * _INDEX_ENTRY.size
        )
        if raw <= previous:
            raise bad("has entries not sorted by id")
        if offset < first or offset + length > pack_size:
            raise bad(f"has entry {index} outside the pack")
        entries[raw] = (offset, length)
        previous = raw
    return entries, pack_size


@dataclass(slots=True)
class _Pack:
    name: str
    path: Path
    size: int
    count: int


class PackSet:
    """The packs of one folder, with a map from id to location.

    The map costs about 200 bytes of memory per packed object.

    Args:
        folder: The ``objects/packs`` folder.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._where: dict[bytes, tuple[_Pack, int, int]] = {}
        self._packs: dict[str, _Pack] = {}
        self._damaged: dict[str, str] = {}
        self._maps: dict[Path, mmap.mmap | None] = {}
        self._lock = threading.Lock()

    def refresh(self) -> bool:
        """Load the indexes written since the last look.

        Returns:
            True if a new index was loaded.
        """
        try:
            names = sorted(
                entry.name[: -len(".idx")]
                for entry in os.scandir(self.folder)
                if entry.name.endswith(".idx") and entry.is_file()
            )
        except FileNotFoundError:
            return False
        # an index removed by gc (its pack rewritten) takes its pack away
        for gone in set(self._packs) - set(names):
            self.forget(gone)
        # a damaged index removed (repair) is no longer reported
        for gone in set(self._damaged) - set(names):
            del self._damaged[gone]
        fresh = [name for name in names if name not in self._packs]
        loaded = False
        for name in fresh:
            if name in self._damaged:
                continue
            idx = self.folder / f"{name}.idx"
            try:
                entries, size = decode_index(idx.read_bytes(), where=str(idx))
            except CorruptObjectError as exc:
                self._damaged[name] = exc.reason
                logger.warning("pack index %s %s", idx, exc.reason)
                continue
            except FileNotFoundError:
                continue
            self.publish(name, entries, size)
            loaded = True
        return loaded

    def publish(
        self, name: str, entries: dict[bytes, tuple[int, int]], size: int
    ) -> None:
        """Make a pack's objects readable (after its index is durable)."""
        pack = _Pack(name, self.folder / f"{name}.pack", size, len(entries))
        with self._lock:
            self._packs[name] = pack
            for raw, (offset, length) in entries.items():
                self._where.setdefault(raw, (pack, offset, length))
        logger.debug("loaded pack %s (%d objects)", name, len(entries))

    def forget(self, name: str) -> None:
        """Stop reading pack ``name`` (gc removed or is removing it)."""
        with self._lock:
            pack = self._packs.pop(name, None)
            if pack is None:
                return
            # views handed out keep their mapping alive; new reads map anew
            self._maps.pop(pack.path, None)
            for raw in [
                raw for raw, (owner, _, _) in self._where.items() if owner is pack
            ]:
                del self._where[raw]
        logger.debug("forgot pack %s", name)

    def locate(self, oid: ObjectId) -> PackLocation | None:
        """Return where ``oid`` is packed, or None."""
        found = self._where.get(oid.raw)
        if found is None:
            return None
        pack, offset, length = found
        return PackLocation(pack.path, offset, length)

    def contains(self, oid: ObjectId) -> bool:
        """Return whether ``oid`` is in a loaded pack."""
        return oid.raw in self._where

    def read(
        self, oid: ObjectId, location: PackLocation, limit: int | None = None
    ) -> bytes:
        """Read a packed frame (or its first ``limit`` bytes).

        Raises:
            CorruptObjectError: If the pack is shorter than its index says.
            BackendUnavailableError: If the pack cannot be read.
        """
        length = location.length if limit is None else min(limit, location.length)
        try:
            fd = os.open(location.pack, os.O_RDONLY)
        except OSError as exc:
            raise _unreadable(location.pack, exc) from exc
        try:
            data = os.pread(fd, length, location.offset)
        except OSError as exc:
            raise _unreadable(location.pack, exc) from exc
        finally:
            os.close(fd)
        if len(data) != length:
            raise CorruptObjectError(
                oid.hex,
                "the pack is shorter than its index says",
                location=location.describe(),
            )
        return data

    def view(self, location: PackLocation) -> memoryview | None:
        """Return a packed frame as a view of the mapped pack, without a copy.

        Returns None where the pack cannot be mapped or is shorter than its
        index says (a damaged pack is read with ``read``, which reports it):
        touching a mapping past the end of its file would kill the process.
        """
        with self._lock:
            if location.pack in self._maps:
                mapped = self._maps.pop(location.pack)
            else:
                mapped = _map(location.pack)
                # each mapping holds a file descriptor: keep the recent ones
                while len(self._maps) >= _MAPPED_PACKS:
                    del self._maps[next(iter(self._maps))]
            self._maps[location.pack] = mapped
        if mapped is None or location.offset + location.length > len(mapped):
            return None
        return memoryview(mapped)[location.offset : location.offset + location.length]

    def iter_ids(self) -> Iterator[ObjectId]:
        """Yield the id of every packed object once."""
        for raw in list(self._where):
            yield ObjectId(raw)

    def damaged(self) -> dict[str, str]:
        """Return the indexes that could not be loaded, with what is wrong."""
        return dict(self._damaged)

    def packs(self) -> list[tuple[Path, int]]:
        """Return every loaded pack file and its object count."""
        return [(pack.path, pack.count) for pack in self._packs.values()]

    def orphans(self) -> list[Path]:
        """Return the pack files that have no index: garbage a crash left."""
        try:
            return sorted(
                Path(entry.path)
                for entry in os.scandir(self.folder)
                if entry.name.endswith(".pack")
                and not (self.folder / (entry.name[: -len(".pack")] + ".idx")).exists()
            )
        except FileNotFoundError:
            return []

    def check(self, path: Path) -> list[tuple[ObjectId | None, str]]:
        """Check a loaded pack's header, size and record headers against its index.

        Returns:
            (object, what is wrong) for each fault; the object is None for a
            fault of the whole pack.
        """
        name = path.name[: -len(".pack")]
        pack = self._packs.get(name)
        if pack is None:
            return [(None, f"pack {path} has no loaded index")]
        faults: list[tuple[ObjectId | None, str]] = []
        try:
            with open(path, "rb") as handle:
                actual = os.fstat(handle.fileno()).st_size
                head = handle.read(PACK_HEADER_SIZE)
                # magic, version and the reserved bytes, which are zero
                if head != _PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION):
                    faults.append((None, f"pack {path} has a bad header"))
                if actual != pack.size:
                    faults.append(
                        (
                            None,
                            f"pack {path} is {actual} bytes, not {pack.size}",
                        )
                    )
                for raw, (owner, offset, length) in list(self._where.items()):
                    if owner is not pack:
                        continue
                    handle.seek(offset - RECORD_HEADER_SIZE)
                    record = handle.read(RECORD_HEADER_SIZE)
                    if len(record) < RECORD_HEADER_SIZE or _RECORD.unpack(record) != (
                        raw,
                        length,
                    ):
                        faults.append(
                            (
                                ObjectId(raw),
                                f"the record header of object {raw.hex()} in pack"
                                f" {path} does not match the index",
                            )
                        )
        except OSError as exc:
            faults.append((None, f"pack {path} cannot be read: {exc.strerror or exc}"))
        return faults


def _map(path: Path) -> mmap.mmap | None:
    # packs are never changed in place: a mapping stays valid, even once gc
    # has removed the file, until the last view of it is gone
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size == 0:
                return None
            return mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
    except OSError:
        return None


def scan_records(path: Path) -> list[ObjectId]:
    """Return the ids of the complete records of a pack, without its index.

    Used to count what a pack without an index holds; stops at the first
    incomplete or malformed record.
    """
    return scan_pack(path)[0]


def scan_pack(path: Path) -> tuple[list[ObjectId], bool]:
    """Return the ids of a pack's records, read without its index, and more.

    The flag says whether the records run exactly to the end of the file:
    none cut short, and none misread (a damaged length would not land on
    the end).
    """
    found: list[ObjectId] = []
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            head = handle.read(PACK_HEADER_SIZE)
            if len(head) < PACK_HEADER_SIZE or head[:4] != PACK_MAGIC:
                return found, False
            position = PACK_HEADER_SIZE
            while position + RECORD_HEADER_SIZE <= size:
                raw, length = _RECORD.unpack(handle.read(RECORD_HEADER_SIZE))
                position += RECORD_HEADER_SIZE + length
                if position > size:
                    return found, False
                found.append(ObjectId(raw))
                handle.seek(position)
    except OSError:
        return found, False
    return found, position == size


class PackWriter:
    """Streams frames into one new pack, then publishes it with its index.

    Not thread-safe: callers serialise ``add``.

    Args:
        folder: The ``objects/packs`` folder (created if missing).
        tmp: A folder on the same file system for the index's temporary file.
        durable: Fsync the pack, the index and the folder.
    """

    def __init__(self, folder: Path, tmp: Path, *, durable: bool) -> None:
        self.folder = folder
        self.tmp = tmp
        self.durable = durable
        self.name = "pack-" + os.urandom(16).hex()
        self.path = folder / f"{self.name}.pack"
        self.entries: dict[bytes, tuple[int, int]] = {}
        self.size = 0
        self._handle: BinaryIO | None = None
        self._written_back = 0

    def _open(self) -> BinaryIO:
        created = not self.folder.is_dir()
        self.folder.mkdir(exist_ok=True)
        if created and self.durable:
            fsync_dir(self.folder.parent)
        handle = open(self.path, "xb")  # noqa: SIM115  (closed in finish or discard)
        handle.write(_PACK_HEADER.pack(PACK_MAGIC, PACK_VERSION))
        self.size = PACK_HEADER_SIZE
        return handle

    def add(self, oid: ObjectId, parts: Sequence[FramePart]) -> None:
        """Append one frame, given as the parts it is the concatenation of.

        Raises:
            BackendUnavailableError: If the file system refuses the write.
        """
        length = sum(_nbytes(part) for part in parts)
        try:
            if self._handle is None:
                self._handle = self._open()
            self._handle.write(_RECORD.pack(oid.raw, length))
            for part in parts:
                self._handle.write(part.data if isinstance(part, np.ndarray) else part)
        except OSError as exc:
            raise _unwritable(self.path, exc) from exc
        self.entries[oid.raw] = (self.size + RECORD_HEADER_SIZE, length)
        self.size += RECORD_HEADER_SIZE + length
        if self.durable and self.size - self._written_back >= _WRITEBACK_EVERY:
            # the disk writes this part while the commit encodes the next:
            # the fsync in ``finish`` then has little left to wait for
            try:
                self._handle.flush()
            except OSError as exc:
                raise _unwritable(self.path, exc) from exc
            start = self._written_back
            start_writeback(self._handle.fileno(), start, self.size - start)
            self._written_back = self.size

    def finish(self) -> dict[bytes, tuple[int, int]]:
        """Make the pack durable, then its index, then their folder entries.

        Returns:
            The entries, for publishing to readers of this process.

        Raises:
            BackendUnavailableError: If a write or fsync fails; the pack is
                then garbage.
        """
        if self._handle is None:
            return {}
        handle, self._handle = self._handle, None
        index = encode_index(self.entries, self.size)
        tmp = self.tmp / f"{INDEX_TMP_PREFIX}{self.name}"
        published = False
        try:
            # the pack first: an index must never name bytes a power loss can lose
            handle.flush()
            if self.durable:
                os.fsync(handle.fileno())
            handle.close()
            with open(tmp, "wb") as out:
                out.write(index)
                out.flush()
                if self.durable:
                    os.fsync(out.fileno())
            os.replace(tmp, self.folder / f"{self.name}.idx")
            published = True
            if self.durable:
                fsync_dir(self.folder)
        except OSError as exc:
            # the first failure is the one reported; closing may fail again
            with contextlib.suppress(OSError):
                handle.close()
            remove_quietly(tmp)
            if not published:
                # never readable: give its space back now rather than to gc
                remove_quietly(self.path)
            raise _unwritable(self.path, exc) from exc
        logger.debug(
            "wrote %s (%d objects, %d bytes)", self.name, len(self.entries), self.size
        )
        return self.entries

    def discard(self) -> None:
        """Close and remove an unfinished pack (it was never readable)."""
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                handle.close()
            except OSError:
                logger.warning("cannot close unfinished pack %s", self.path)
            remove_quietly(self.path)


def _nbytes(part: FramePart) -> int:
    return part.nbytes if not isinstance(part, bytes) else len(part)


def _unreadable(path: Path, exc: OSError) -> BackendUnavailableError:
    return BackendUnavailableError(
        str(path.parent), f"cannot read {path}: {exc.strerror or exc}"
    )


def _unwritable(path: Path, exc: OSError) -> BackendUnavailableError:
    return BackendUnavailableError(
        str(path.parent),
        f"cannot write {path}: {exc.strerror or exc}",
        hint="free disk space or fix permissions, then commit again",
    )


def remove_quietly(path: Path) -> None:
    """Remove a file that may already be gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return


def fsync_dir(folder: Path) -> None:
    """Make a folder's entries (files created, renamed, removed) durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
