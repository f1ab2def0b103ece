"""Tensor data through an object store: encodings, chunks, delta bases, checks.

This layer decides how each blob of tensor data is stored (``StorageOptions``):
as packed bits when every element is zero or one bit pattern, as a delta (the
zigzag of the integer difference; XOR in a format 2 repository) against the
same tensor of the parent epoch or, by default, against that tensor's last
full copy, otherwise in byte planes (or zstandard for 1-byte elements), raw
wherever compression does not pay, and in chunks of ``chunk_size`` bytes when
larger. The work of a whole state is split into jobs (a blob, or one chunk of
a large one) run on a thread pool, largest first: BLAKE3, zstandard and NumPy
release the GIL. Reading decodes every blob straight into the destination
buffer the caller allocated, in parallel, and verifies every id. Memory
beyond the state itself is the session's copy of the delta bases
(``DeltaCache``) and a few per-thread buffers of at most one chunk. The ids
never depend on any of this; ``docs/format.md`` gives the frames.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Final, Protocol, TypeVar, cast

import blake3
import numpy as np

from mvcstore.arrays import RawTensor
from mvcstore.codec import (
    DELTA_ENCODINGS,
    DEPENDENCY_PREFIX,
    ENCODING_CHUNKED,
    FRAME_HEADER_SIZE,
    FramePart,
    ObjectId,
    bits_frame,
    chunked_frame,
    decode_into,
    delta_frame,
    diff_frame,
    frame,
    hash_object,
    parse_frame,
    parts_size,
    planes_frame,
)
from mvcstore.encodings import (
    BITS_WIDTHS,
    PLANE_WIDTHS,
    Bytes,
    as_bytes,
    find_bit_pattern,
    plane_width,
    scratch,
)
from mvcstore.errors import (
    CorruptObjectError,
    InvalidInputError,
    ObjectNotFoundError,
)
from mvcstore.objects import Tensor, dtype_size
from mvcstore.stores.base import ObjectBatch, ObjectStore, read_frame_prefix

__all__ = [
    "StorageOptions",
    "BaseData",
    "BlobJob",
    "WrittenBlob",
    "Pool",
    "write_blobs",
    "read_blobs",
    "base_data",
    "CachedTensor",
    "DeltaCache",
    "write_tensors",
]

logger = logging.getLogger(__name__)

_SMALL: Final = 64
"""Blobs below this many bytes are stored raw."""
_DELTA_WINS: Final = 0.75
"""A delta below this share of the data is kept without trying a whole frame."""
_REFRESH: Final = 0.8
"""A delta this share of its whole base's stored size or more starts a new base."""
_HASH_THREADS_FROM: Final = 16 << 20
_GROUP_BYTES: Final = 1 << 20
"""Tasks below this size run in groups of about this many bytes."""
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageOptions:
    """How tensor data is stored; none of it changes an id.

    Attributes:
        chunk_size: Blobs larger than this are stored as chunks of this many
            bytes (the last one shorter); a multiple of 64.
        max_delta_depth: Longest chain of deltas (0: no deltas). A tensor
            whose parent is at this depth is stored against the parent's own
            base instead, so with 1 every epoch is one delta against the last
            full copy. Reading an epoch decodes this many deltas per blob at
            most, unless two processes stored the same new blob at once
            with frames of different depths (format.md 5.4). A new full
            copy is made when a delta grows to 0.8 of the full copy it is
            against, and in every ``full_every``-th epoch.
        full_every: Epochs 1, 1 + n, 1 + 2n... of a line (by their number)
            store every tensor whole, except those whose parent's tensor is
            stored whole already (0: full copies only by size). The further
            an epoch is from its full copy, the larger and slower to make its
            delta.
        delta_cache_bytes: Tensor bytes a session keeps between commits to
            use as delta bases without reading them back (0: none). The cache
            costs this much memory at most: a copy of each cached tensor.
        level: The zstandard level for tensor data.
        min_saving: A plane is compressed only when that brings it below this
            share of its size (bitmaps: 0.97).
        encodings: False writes format 1 frames only (raw or zstandard).
        difference: Deltas are integer differences, and small values may be
            packed (format 3); False writes XOR deltas and no packed section
            (format 2).
    """

    chunk_size: int = 32 << 20
    max_delta_depth: int = 1
    full_every: int = 5
    delta_cache_bytes: int = 1 << 30
    level: int = 1
    min_saving: float = 0.9
    encodings: bool = True
    difference: bool = True

    def __post_init__(self) -> None:
        for name in (
            "chunk_size",
            "max_delta_depth",
            "full_every",
            "delta_cache_bytes",
            "level",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidInputError(f"{name} must be an integer, got {value!r}")
        if self.chunk_size < 64 or self.chunk_size % 64:
            raise InvalidInputError(
                f"chunk size {self.chunk_size} must be a positive multiple of 64"
            )
        if not 0 <= self.max_delta_depth <= 255:
            raise InvalidInputError("max_delta_depth must be between 0 and 255")
        if self.full_every < 0:
            raise InvalidInputError("full_every must be 0 or more")
        if self.delta_cache_bytes < 0:
            raise InvalidInputError("delta_cache_bytes must be 0 or more")
        if not 1 <= self.level <= 22:
            raise InvalidInputError(
                f"zstandard level {self.level} must be between 1 and 22"
            )
        saving = self.min_saving
        if not isinstance(saving, int | float) or not 0 < saving <= 1:
            raise InvalidInputError(
                f"min_saving {saving!r} must be a share above 0 and at most 1"
            )


class Pool(Protocol):
    """The part of ``concurrent.futures.Executor`` used here."""

    def map(self, fn: Callable[[_T], _R], items: Iterable[_T], /) -> Iterator[_R]:
        """Run ``fn`` over the items, results in order."""
        ...


@dataclass(frozen=True, slots=True)
class BaseData:
    """A blob a new blob of the same length may be stored as a delta against.

    Attributes:
        blob: The base blob's id.
        data: Its bytes when a session cached them; None reads them back.
        depth: Its delta depth when known (0 for a full frame).
        chunks: When the base is chunked: each chunk's id, length and depth
            (None when unknown).
        stored: The stored size of the full frame at the bottom of its chain,
            when known.
    """

    blob: ObjectId
    data: Bytes | None = None
    depth: int | None = None
    chunks: tuple[tuple[ObjectId, int, int | None], ...] | None = None
    stored: int | None = None


@dataclass(slots=True)
class BlobJob:
    """One blob to store.

    Attributes:
        data: The blob's bytes (not copied; must not change until written).
        element_size: The size of one element of the tensor, for the planes.
        base: What it may be stored as a delta against, if anything.
        keep: A buffer of the blob's length for the session's cache, or None:
            it receives the bytes of the next commit's base (this blob's, or
            its base's when it is stored at the deepest level). It may hold
            the base's own bytes: they are overwritten only once the delta
            against them is made.
        keep_blob: The blob whose bytes ``keep`` holds now, if any: a blob
            stored already leaves them there.
    """

    data: Bytes
    element_size: int
    base: BaseData | None = None
    keep: Bytes | None = None
    keep_blob: ObjectId | None = None


@dataclass(frozen=True, slots=True)
class WrittenBlob:
    """What storing a blob gave.

    Attributes:
        blob: The blob's id.
        depth: The delta depth of its frame (0 unless stored as a delta);
            None when it was already stored (depth unknown).
        chunks: For a chunked blob, each chunk's id, length and depth.
        stored: Bytes of new frames this blob added.
        next_base: What a next commit of the same tensor is stored against
            (None when the blob was stored already).
    """

    blob: ObjectId
    depth: int | None
    chunks: tuple[tuple[ObjectId, int, int | None], ...] | None
    stored: int
    next_base: BaseData | None = None


def write_blobs(
    jobs: Sequence[BlobJob],
    *,
    batch: ObjectBatch,
    store: ObjectStore,
    options: StorageOptions,
    pool: Pool,
) -> list[WrittenBlob]:
    """Store many blobs into ``batch``, in parallel, each encoded as it pays.

    Args:
        jobs: The blobs.
        batch: Where new frames go.
        store: Where delta bases are read back from when not cached.
        options: How to encode.
        pool: The thread pool.

    Returns:
        One result per job, in order.

    Raises:
        BackendUnavailableError: If the batch cannot be written.
        CorruptObjectError: If a delta base read back does not verify.
    """
    writer = _Writer(batch, store, options)

    # each small blob is hashed, claimed and encoded in one job; a blob to be
    # chunked is hashed first (on all threads) to know whether it is stored
    ids: list[ObjectId | None] = [None] * len(jobs)
    tasks: list[tuple[int, Callable[[], object]]] = []
    plans: list[_ChunkPlan | None] = [None] * len(jobs)
    following: list[BaseData | None] = [None] * len(jobs)
    for index, job in enumerate(jobs):
        if job.data.size > options.chunk_size and options.encodings:
            oid = _blob_id(job.data)
            ids[index] = oid
            plan = _ChunkPlan(oid, job, options.chunk_size)
            plans[index] = plan
            if writer.claim(oid):
                tasks.extend(plan.tasks(writer))
            else:
                plan.skip()
                if job.keep is not None and job.keep_blob is None:
                    tasks.append(
                        (job.data.size, partial(np.copyto, job.keep, job.data))
                    )
        else:
            task = partial(_store_job, writer, job, ids, following, index)
            tasks.append((job.data.size, task))
    list(pool.map(_run, _grouped(tasks)))

    # a chunked blob's table after its chunks: readers never see it without them
    out: list[WrittenBlob] = []
    for index, chunked_plan in enumerate(plans):
        if chunked_plan is None:
            oid = cast(ObjectId, ids[index])
            depth, size = writer.results.get(oid, (None, 0))
            if following[index] is None:
                depth, size = None, 0
            out.append(WrittenBlob(oid, depth, None, size, following[index]))
        else:
            out.append(chunked_plan.finish(writer))
    return out


def _store_job(
    writer: _Writer,
    job: BlobJob,
    ids: list[ObjectId | None],
    following: list[BaseData | None],
    index: int,
) -> None:
    oid = _blob_id(job.data)
    ids[index] = oid
    if writer.claim(oid):
        following[index] = writer.put_whole(oid, job, keep=job.keep)
    elif job.keep is not None and job.keep_blob is None:
        # stored already: a cached base stays; a fresh buffer takes this blob
        np.copyto(job.keep, job.data)


def _run(task: Callable[[], object]) -> object:
    return task()


def _grouped(
    tasks: list[tuple[int, Callable[[], object]]],
) -> list[Callable[[], object]]:
    """Order tasks largest first and run the small ones in groups.

    Largest first, so that the threads finish together; small tasks (most
    tensors of a model are a few KiB: norms, biases) share one pool task per
    ``_GROUP_BYTES``, which spares a future and a thread hand-off each.
    """
    tasks = sorted(tasks, key=lambda item: -item[0])
    out: list[Callable[[], object]] = []
    group: list[Callable[[], object]] = []
    held = 0
    for size, task in tasks:
        if size >= _GROUP_BYTES:
            out.append(task)
            continue
        group.append(task)
        held += size
        if held >= _GROUP_BYTES:
            out.append(partial(_run_all, group))
            group, held = [], 0
    if group:
        out.append(partial(_run_all, group))
    return out


def _run_all(tasks: list[Callable[[], object]]) -> None:
    for task in tasks:
        task()


def _blob_id(data: Bytes) -> ObjectId:
    if data.size >= _HASH_THREADS_FROM:
        hasher = blake3.blake3(
            f"blob {data.size}\0".encode("ascii"), max_threads=blake3.blake3.AUTO
        )
        hasher.update(data.data)
        return ObjectId(hasher.digest())
    return hash_object("blob", data.data)


def _same_buffer(a: Bytes, b: Bytes) -> bool:
    return a.size == b.size and a.ctypes.data == b.ctypes.data


class _Writer:
    """Encodes blobs and puts them into the batch; shared by the jobs."""

    def __init__(
        self, batch: ObjectBatch, store: ObjectStore, options: StorageOptions
    ) -> None:
        self.batch = batch
        self.store = store
        self.options = options
        self.results: dict[ObjectId, tuple[int | None, int]] = {}
        self._claimed: set[ObjectId] = set()
        self._lock = threading.Lock()

    def claim(self, oid: ObjectId) -> bool:
        """Return True once per id not yet stored: the caller then stores it."""
        with self._lock:
            if oid in self._claimed:
                return False
            self._claimed.add(oid)
        return not self.batch.has(oid)

    def put_whole(
        self,
        oid: ObjectId,
        job: BlobJob,
        *,
        keep: Bytes | None,
        base: BaseData | None = None,
        data: Bytes | None = None,
    ) -> BaseData:
        """Encode one blob (or chunk) and put it; return the next commit's base.

        ``keep``, when given, receives the bytes of that base.
        """
        content = job.data if data is None else data
        parts, depth, used = self.encode(content, job.element_size, base or job.base)
        self.batch.put(oid, parts)
        size = parts_size(parts)
        with self._lock:
            self.results[oid] = (depth, size)
        if used is None:
            following = BaseData(oid, depth=0, stored=size)
        elif depth < self.options.max_delta_depth:
            following = BaseData(oid, depth=depth, stored=used.stored)
        else:
            # at the deepest level: the next epoch is stored against the same base
            following = replace(used, data=None)
        if keep is not None:
            # after the delta: ``keep`` may hold the very bytes it was made from
            source = content if used is None or following.blob == oid else used.data
            if source is not None and not _same_buffer(keep, source):
                np.copyto(keep, source)
        return following

    def encode(
        self, data: Bytes, element_size: int, base: BaseData | None
    ) -> tuple[list[FramePart], int, BaseData | None]:
        """Return the frame parts of ``data``, their delta depth and base.

        The base comes back with its bytes (None for a whole frame).
        """
        options = self.options
        size = data.size
        if not options.encodings:
            return [frame("blob", data.data, level=options.level)], 0, None
        if size < _SMALL:
            return [frame("blob", data.data, level=0)], 0, None
        width = plane_width(element_size)
        if width in BITS_WIDTHS:
            pattern = find_bit_pattern(data, width)
            if pattern is not None:
                bits = bits_frame(
                    data, width, pattern, level=options.level, pack=options.difference
                )
                return bits, 0, None
        delta = None
        if base is not None and options.max_delta_depth > 0:
            delta = self._delta(data, width, base)
            if delta is not None:
                stored, full = parts_size(delta[0]), delta[2].stored
                if full is not None:
                    if stored < full * _REFRESH:
                        return delta
                    # grown far from its base: a new full copy starts a new chain
                    delta = None
                elif stored < size * _DELTA_WINS:
                    return delta
        whole: list[FramePart]
        if width in PLANE_WIDTHS:
            whole = planes_frame(
                data,
                width,
                level=options.level,
                min_saving=options.min_saving,
                into=scratch("whole", size),
                pack=options.difference,
            )
            if parts_size(whole) >= size:
                whole = [frame("blob", data.data, level=0)]
        else:
            whole = [frame("blob", data.data, level=options.level)]
        # a delta that saves little competes with the whole frame, by size
        if delta is not None and parts_size(delta[0]) < parts_size(whole):
            return delta
        return whole, 0, None

    def _delta(
        self, data: Bytes, width: int, base: BaseData
    ) -> tuple[list[FramePart], int, BaseData] | None:
        store, limit = self.store, self.options.max_delta_depth
        depth = base.depth
        if depth is None:
            depth = _depth_of(store, base.blob)
            if depth is None:
                return None
        old = base.data
        try:
            # a base at the deepest level lends its own base instead, and so
            # does a delta of another width (a blob shared by two dtypes):
            # a chain keeps one width
            while depth > 0:
                head = read_frame_prefix(store, base.blob, DEPENDENCY_PREFIX + 2)
                if len(head) < DEPENDENCY_PREFIX + 2 or head[6] not in DELTA_ENCODINGS:
                    return None
                depth = head[DEPENDENCY_PREFIX]
                if depth < limit and head[DEPENDENCY_PREFIX + 1] == width:
                    break
                below = ObjectId(bytes(head[FRAME_HEADER_SIZE:DEPENDENCY_PREFIX]))
                depth -= 1
                base = BaseData(below, depth=depth, stored=base.stored)
                old = None
            if old is None:
                old = scratch("base", data.size)
                decode_into(base.blob, old, store)
        except (CorruptObjectError, ObjectNotFoundError) as exc:
            # a damaged parent must not stop training: store this one whole
            logger.warning("no delta against %s: %s", base.blob.hex, exc.message)
            return None
        if old.size != data.size:
            return None
        make = diff_frame if self.options.difference else delta_frame
        parts = make(
            data,
            old,
            base=base.blob,
            depth=depth + 1,
            width=width,
            level=self.options.level,
            min_saving=self.options.min_saving,
            into=scratch("delta", data.size),
            pack=self.options.difference,
        )
        return parts, depth + 1, replace(base, data=old)


class _ChunkPlan:
    """A blob larger than the chunk size: its chunks, then its table."""

    def __init__(self, oid: ObjectId, job: BlobJob, chunk_size: int) -> None:
        self.oid = oid
        self.job = job
        self.keep = job.keep
        size = job.data.size
        count = math.ceil(size / chunk_size)
        # the tail is the last chunk, 1 to chunk_size bytes long
        self.bounds = [
            (start, min(start + chunk_size, size))
            for start in range(0, count * chunk_size, chunk_size)
        ]
        self.ids: list[ObjectId | None] = [None] * count
        self.following: list[BaseData | None] = [None] * count
        self.written = False

    def tasks(self, writer: _Writer) -> list[tuple[int, Callable[[], object]]]:
        """Return one job per chunk, each with its size."""
        self.written = True
        bases = self._bases()
        return [
            (end - start, partial(self._put_chunk, writer, index, base))
            for index, (base, (start, end)) in enumerate(
                zip(bases, self.bounds, strict=True)
            )
        ]

    def _bases(self) -> list[BaseData | None]:
        base = self.job.base
        out: list[BaseData | None] = [None] * len(self.bounds)
        if base is None or base.chunks is None or len(base.chunks) != len(self.bounds):
            return out
        for index, ((chunk, length, depth), (start, end)) in enumerate(
            zip(base.chunks, self.bounds, strict=True)
        ):
            if length == end - start:
                data = base.data[start:end] if base.data is not None else None
                out[index] = BaseData(chunk, data=data, depth=depth)
        return out

    def _put_chunk(self, writer: _Writer, index: int, base: BaseData | None) -> None:
        start, end = self.bounds[index]
        piece = self.job.data[start:end]
        chunk = hash_object("blob", piece.data)
        self.ids[index] = chunk
        keep = self.keep[start:end] if self.keep is not None else None
        if writer.claim(chunk):
            self.following[index] = writer.put_whole(
                chunk, self.job, keep=keep, base=base, data=piece
            )
        elif keep is not None:
            np.copyto(keep, piece)

    def skip(self) -> None:
        """Mark the blob as already stored."""
        self.written = False

    def finish(self, writer: _Writer) -> WrittenBlob:
        """Put the chunk table (when the chunks were written)."""
        if not self.written:
            return WrittenBlob(self.oid, None, None, 0)
        chunks: list[tuple[ObjectId, int, int | None]] = []
        bases: list[tuple[ObjectId, int, int | None]] = []
        stored = 0
        for chunk, following, (start, end) in zip(
            self.ids, self.following, self.bounds, strict=True
        ):
            if chunk is None:
                raise InvalidInputError(
                    f"chunk {start} of {self.oid.hex} was not written"
                )
            depth, size = writer.results.get(chunk, (None, 0))
            chunks.append((chunk, end - start, depth))
            if following is None:
                bases.append((chunk, end - start, None))
            else:
                bases.append((following.blob, end - start, following.depth))
            stored += size
        table = chunked_frame(
            self.job.data.size, [(chunk, length) for chunk, length, _ in chunks]
        )
        writer.batch.put(self.oid, [table])
        return WrittenBlob(
            self.oid,
            0,
            tuple(chunks),
            stored + len(table),
            BaseData(self.oid, chunks=tuple(bases)),
        )


def _depth_of(store: ObjectStore, oid: ObjectId) -> int | None:
    head = read_frame_prefix(store, oid, DEPENDENCY_PREFIX + 2)
    if len(head) <= FRAME_HEADER_SIZE:
        return None
    if head[6] in DELTA_ENCODINGS:
        return head[DEPENDENCY_PREFIX] if len(head) > DEPENDENCY_PREFIX else None
    if head[6] == ENCODING_CHUNKED:
        return None
    return 0


def base_data(store: ObjectStore, blob: ObjectId) -> BaseData:
    """Describe a stored blob as a delta base, reading only frame headers.

    Raises:
        ObjectNotFoundError: If the blob is not stored.
        CorruptObjectError: If its frame does not parse.
    """
    head = read_frame_prefix(store, blob, DEPENDENCY_PREFIX + 2)
    if len(head) > FRAME_HEADER_SIZE and head[6] == ENCODING_CHUNKED:
        layout = parse_frame(store.get_framed(blob), object_id=blob)
        chunks = tuple(
            (chunk, length, _depth_of(store, chunk)) for chunk, length in layout.chunks
        )
        return BaseData(blob, chunks=chunks)
    return BaseData(blob, depth=_depth_of(store, blob))


def read_blobs(
    jobs: Sequence[tuple[ObjectId, Bytes]], *, store: ObjectStore, pool: Pool
) -> None:
    """Decode blobs into their buffers, in parallel, verifying every id.

    A chunked blob is split into one job per chunk; its whole id is checked
    once every chunk is in place.

    Args:
        jobs: Each blob's id and the buffer of exactly its length.
        store: Where frames are read.
        pool: The thread pool.

    Raises:
        ObjectNotFoundError: If a blob or an object its frame needs is missing.
        CorruptObjectError: Naming the damaged object.
    """
    tasks: list[tuple[int, Callable[[], object]]] = []
    wholes: list[tuple[ObjectId, Bytes]] = []
    for oid, out in jobs:
        head = read_frame_prefix(store, oid, FRAME_HEADER_SIZE)
        if len(head) == FRAME_HEADER_SIZE and head[6] == ENCODING_CHUNKED:
            layout = parse_frame(
                store.get_framed(oid), object_id=oid, location=store.describe(oid)
            )
            if layout.size != out.size:
                raise CorruptObjectError(
                    oid.hex,
                    f"holds {layout.size} bytes where {out.size} are needed",
                    location=store.describe(oid),
                )
            offset = 0
            for chunk, length in layout.chunks:
                piece = out[offset : offset + length]
                task = partial(decode_into, chunk, piece, store, chunk=True)
                tasks.append((length, task))
                offset += length
            wholes.append((oid, out))
        else:
            tasks.append((out.size, partial(decode_into, oid, out, store)))
    list(pool.map(_run, _grouped(tasks)))
    list(pool.map(_run, [partial(_check_whole, store, *item) for item in wholes]))


def _check_whole(store: ObjectStore, oid: ObjectId, out: Bytes) -> None:
    if _blob_id(out) != oid:
        raise CorruptObjectError(
            oid.hex,
            "its chunks verify but do not hash to its id together",
            location=store.describe(oid),
        )


@dataclass(slots=True)
class CachedTensor:
    """The base a session's next commit stores a tensor against, with its bytes.

    It is the blob of the tensor committed last, or that blob's own base when
    the blob is stored at the deepest delta level.

    Attributes:
        dtype: The tensor's element type.
        shape: Its shape.
        blob: The base blob's id.
        data: A copy of the base's bytes.
        depth: The delta depth the base is stored at, if known.
        chunks: The base's chunks' ids, lengths and depths, if it is chunked.
        stored: The stored size of the full frame at the bottom of its chain,
            if known.
        current: The blob of the tensor itself in the epoch the cache is for.
    """

    dtype: str
    shape: tuple[int, ...]
    blob: ObjectId
    data: Bytes
    depth: int | None
    chunks: tuple[tuple[ObjectId, int, int | None], ...] | None
    stored: int | None = None
    current: ObjectId | None = None


class DeltaCache:
    """A session's copy of the tensors it committed last, by (role, name).

    With it, a commit makes its deltas without reading the parent's data back
    from the store. It holds at most ``limit`` bytes of tensor data; tensors
    beyond that are read back when needed. It is valid only for the epoch it
    was filled by (``epoch``). A commit overwrites its buffers in place, so
    ``begin`` marks it invalid until ``publish``: a failed or lost commit
    leaves it empty for the next one.

    Args:
        limit: The most bytes of tensor data kept.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.epoch: ObjectId | None = None
        self._valid = True
        self._entries: dict[tuple[str, str], CachedTensor] = {}
        self._staged: dict[tuple[str, str], CachedTensor] = {}

    def begin(self, base: ObjectId | None) -> None:
        """Start a commit on ``base``: keep the entries only if they are its."""
        if not self._valid or self.epoch != base:
            self.invalidate()
        self._valid = False
        self._staged = {}

    @property
    def nbytes(self) -> int:
        """The bytes of memory the cached tensors keep alive.

        A buffer cut from a larger allocation (the first fill's single one,
        or a pruned tensor's old buffer) keeps all of it alive, so this counts
        allocations, not tensor sizes.
        """
        return _held(entry.data for entry in self._entries.values())

    def get(self, key: tuple[str, str]) -> CachedTensor | None:
        """Return the cached tensor under ``key``, if any."""
        return self._entries.get(key)

    def buffers_for(
        self, wanted: Sequence[tuple[tuple[str, str], int]]
    ) -> list[Bytes | None]:
        """Return where to keep each of a commit's tensors (None: over the limit).

        Same-size buffers are reused, and so is the buffer of a tensor whose
        shape shrank by at most half (pruning). What stays alive counts
        against the limit as whole allocations (``nbytes``). On a first fill
        (no buffer to reuse) they are cut from one allocation, which the
        kernel can back with huge pages: a fresh buffer per tensor costs a
        page fault per 4 KiB.
        """
        out: list[Bytes | None] = []
        pending: list[tuple[int, int]] = []
        for key, size in wanted:
            current = self._entries.get(key)
            if current is not None:
                if current.data.size == size:
                    out.append(current.data)
                    continue
                # a new shape: the old bytes can serve as no base
                del self._entries[key]
                if size < current.data.size <= 2 * size:
                    # a little smaller (a pruned tensor): its old memory serves
                    out.append(current.data[:size])
                    continue
            out.append(None)
            pending.append((len(out) - 1, size))
        # what stays alive counts against the limit: the other entries, those
        # staged by this commit, and the allocations reused above
        budget = self.limit - _held(
            [entry.data for entry in self._entries.values()]
            + [entry.data for entry in self._staged.values()]
            + [buffer for buffer in out if buffer is not None]
        )
        fresh: list[tuple[int, int]] = []
        for index, size in pending:
            # charged as the first fill's single allocation would cut it
            if _aligned(size) <= budget:
                budget -= _aligned(size)
                fresh.append((index, size))
        if fresh and len(fresh) == len(wanted):
            # a first fill: one allocation, freed only when every part is
            arena = np.empty(sum(_aligned(size) for _, size in fresh), dtype=np.uint8)
            offset = 0
            for index, size in fresh:
                out[index] = arena[offset : offset + size]
                offset += _aligned(size)
        else:
            for index, size in fresh:
                out[index] = np.empty(size, dtype=np.uint8)
        return out

    def stage(self, key: tuple[str, str], entry: CachedTensor) -> None:
        """Record what the commit in progress keeps under ``key``."""
        self._staged[key] = entry

    def publish(self, epoch: ObjectId) -> None:
        """Make the staged tensors the cache of ``epoch``; drop the others."""
        self._entries, self._staged = self._staged, {}
        self.epoch = epoch
        self._valid = True

    def invalidate(self) -> None:
        """Forget everything (after a failed commit overwrote some buffers)."""
        self._entries = {}
        self._staged = {}
        self.epoch = None
        self._valid = False


def _held(buffers: Iterable[Bytes]) -> int:
    # the bytes of the distinct allocations that ``buffers`` are views of
    owners: dict[int, int] = {}
    for buffer in buffers:
        owner: Bytes = buffer
        while isinstance(owner.base, np.ndarray):
            owner = owner.base
        owners[id(owner)] = owner.nbytes
    return sum(owners.values())


def _aligned(size: int) -> int:
    # each buffer starts on a 64-byte boundary, as a fresh allocation would
    return -(-size // 64) * 64


def _parent_base(
    parent: Callable[[str], Tensor | None],
    name: str,
    raw: RawTensor,
    store: ObjectStore,
) -> BaseData | None:
    # a damaged or missing parent must not stop training: no delta then
    try:
        previous = parent(name)
        if previous is None or (previous.dtype, previous.shape) != (
            raw.dtype,
            raw.shape,
        ):
            return None
        return base_data(store, previous.data)
    except (CorruptObjectError, ObjectNotFoundError) as exc:
        logger.warning("no delta base for tensor %r: %s", name, exc.message)
        return None


def write_tensors(
    items: Sequence[tuple[str, RawTensor]],
    *,
    role: str,
    parent: Callable[[str], Tensor | None] | None,
    cache: DeltaCache | None,
    batch: ObjectBatch,
    store: ObjectStore,
    options: StorageOptions,
    pool: Pool,
    whole: bool = False,
) -> list[Tensor]:
    """Store the data of named tensors; return their tensor objects.

    Each tensor may be stored as a delta against the tensor of the same name,
    dtype and shape that ``cache`` holds (when valid) or ``parent`` names.

    Args:
        items: Tensor names and raw tensors.
        role: The state's role (``""`` for the weights), to key the cache.
        parent: Returns the parent epoch's tensor of a name, or None.
        cache: The session's cache, valid for the parent epoch, or None.
        batch: Where new frames go.
        store: Where bases are read back from.
        options: How to encode.
        pool: The thread pool.
        whole: Store every tensor whole (a new full copy), except those whose
            parent's tensor is stored whole already (a delta against it then).

    Raises:
        BackendUnavailableError: If the batch cannot be written.
        CorruptObjectError: If a base read back does not verify.
    """
    jobs: list[BlobJob] = []
    datas = [as_bytes(raw.data) for _, raw in items]
    keeps: list[Bytes | None] = (
        cache.buffers_for(
            [
                ((role, name), data.size)
                for (name, _), data in zip(items, datas, strict=True)
            ]
        )
        if cache is not None
        else [None] * len(items)
    )
    for (name, raw), data, keep in zip(items, datas, keeps, strict=True):
        key = (role, name)
        cached = cache.get(key) if cache is not None else None
        base: BaseData | None = None
        near = False
        deltas = options.max_delta_depth > 0 and options.encodings
        if deltas and data.size >= _SMALL:
            # near: the base is the parent's own tensor, stored whole
            if cached is not None and (cached.dtype, cached.shape) == (
                raw.dtype,
                raw.shape,
            ):
                base = BaseData(
                    cached.blob,
                    data=cached.data,
                    depth=cached.depth,
                    chunks=cached.chunks,
                    stored=cached.stored,
                )
                near = cached.blob == cached.current and cached.depth == 0
            elif parent is not None:
                base = _parent_base(parent, name, raw, store)
                near = base is not None and base.depth == 0
            # a new full copy, unless the parent's tensor is one already
            if whole and not near:
                base = None
        keep_blob = cached.blob if cached is not None and keep is cached.data else None
        jobs.append(BlobJob(data, dtype_size(raw.dtype), base, keep, keep_blob))

    written = write_blobs(jobs, batch=batch, store=store, options=options, pool=pool)
    out: list[Tensor] = []
    for (name, raw), job, result in zip(items, jobs, written, strict=True):
        out.append(
            Tensor(
                dtype=raw.dtype, shape=raw.shape, data=result.blob, nbytes=job.data.size
            )
        )
        if cache is not None and job.keep is not None:
            cache.stage((role, name), _cache_entry(raw, job, result, cache, role, name))
    return out


def _cache_entry(
    raw: RawTensor,
    job: BlobJob,
    result: WrittenBlob,
    cache: DeltaCache,
    role: str,
    name: str,
) -> CachedTensor:
    # what ``job.keep`` holds now: the next base, the cached base left in
    # place (the blob was stored already), or this blob's bytes
    following = result.next_base
    keep = cast(Bytes, job.keep)
    if following is not None:
        return CachedTensor(
            dtype=raw.dtype,
            shape=raw.shape,
            blob=following.blob,
            data=keep,
            depth=following.depth,
            chunks=following.chunks,
            stored=following.stored,
            current=result.blob,
        )
    cached = cache.get((role, name))
    if job.keep_blob is not None and cached is not None:
        return replace(cached, current=result.blob)
    return CachedTensor(
        dtype=raw.dtype,
        shape=raw.shape,
        blob=result.blob,
        data=keep,
        depth=None,
        chunks=None,
        current=result.blob,
    )
