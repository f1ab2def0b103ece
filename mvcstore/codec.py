"""Canonical encoding, object ids and the storage framing of objects.

This layer owns the exact bytes behind every id: canonical msgpack (one encoding
per value), the BLAKE3-256 id over a kind tag plus those bytes, and the frame an
object is stored in: a 16-byte header, then the payload raw, zstandard
compressed, split into byte planes, as the XOR against a base blob, as packed
bits, or as a table of chunks. Encodings never change an id. It knows nothing
of what objects mean, and nothing of where they are stored: a frame that names
other objects reads them through a ``FrameSource``. ``docs/format.md``
describes every byte written here; ``encodings`` holds the byte arithmetic.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, TypeAlias, cast

import blake3
import msgpack
import numpy as np
import zstandard

from mvcstore.encodings import (
    BITS_WIDTHS,
    DELTA_WIDTHS,
    JOIN_ADD,
    JOIN_SET,
    JOIN_XOR,
    PLANE_WIDTHS,
    SECTION_PACKED,
    Bytes,
    Section,
    check_section_size,
    compress_section,
    diff_planes,
    join_planes,
    pack_bits,
    read_sections,
    section_bytes,
    section_header,
    section_planes,
    split_planes,
    unpack_bits_into,
    xor_planes,
    zstd_decompress,
    zstd_decompress_into,
)
from mvcstore.errors import CorruptObjectError, InvalidInputError

__all__ = [
    "ID_SIZE",
    "KINDS",
    "FRAME_MAGIC",
    "FRAME_HEADER_SIZE",
    "MAX_OBJECT_SIZE",
    "MAX_CHUNKED_SIZE",
    "MAX_DELTA_DEPTH",
    "DEPENDENCY_PREFIX",
    "ENCODING_RAW",
    "ENCODING_ZSTD",
    "ENCODING_PLANES",
    "ENCODING_DELTA",
    "ENCODING_DIFF",
    "DELTA_ENCODINGS",
    "ENCODING_BITS",
    "ENCODING_CHUNKED",
    "ENCODINGS",
    "Value",
    "ObjectId",
    "canonical",
    "encode",
    "decode",
    "hash_object",
    "Frame",
    "FramePart",
    "FrameSource",
    "FrameLayout",
    "frame_header",
    "frame",
    "planes_frame",
    "delta_frame",
    "readable_in",
    "chain_readable_in",
    "diff_frame",
    "bits_frame",
    "chunked_frame",
    "parts_size",
    "join_parts",
    "parse_frame",
    "frame_dependencies",
    "decode_into",
    "verify_blob",
    "unframe",
]

ID_SIZE: Final = 32
"""Bytes in an object id (BLAKE3-256)."""

KINDS: Final[dict[str, int]] = {
    "blob": 1,
    "tensor": 2,
    "state": 3,
    "graph": 4,
    "epoch": 5,
}
"""Object kinds and the code each has in a stored frame."""

_KIND_BY_CODE: Final = {code: kind for kind, code in KINDS.items()}

FRAME_MAGIC: Final = b"mvco"
FRAME_VERSION: Final = 1
FRAME_HEADER_SIZE: Final = 16
_FRAME_HEADER: Final = struct.Struct("<4sBBBBQ")

ENCODING_RAW: Final = 0
ENCODING_ZSTD: Final = 1
ENCODING_PLANES: Final = 2
ENCODING_DELTA: Final = 3
ENCODING_BITS: Final = 4
ENCODING_CHUNKED: Final = 5
ENCODING_DIFF: Final = 6
DELTA_ENCODINGS: Final = frozenset({3, 6})
"""Encodings of frames stored against a base blob: XOR (3) and difference (6)."""
ENCODINGS: Final[dict[int, str]] = {
    ENCODING_RAW: "raw",
    ENCODING_ZSTD: "zstd",
    ENCODING_PLANES: "planes",
    ENCODING_DELTA: "delta",
    ENCODING_BITS: "bits",
    ENCODING_CHUNKED: "chunked",
    ENCODING_DIFF: "diff",
}
"""Frame encodings by code; codes 2 to 6 are for blobs only (formats 2 and 3)."""

MAX_OBJECT_SIZE: Final = 1 << 36
"""Largest logical size a frame may declare (64 GiB); larger claims are corrupt."""
MAX_CHUNKED_SIZE: Final = 1 << 48
"""Largest logical size a chunked frame may declare (256 TiB)."""
MAX_DELTA_DEPTH: Final = 255
"""Deepest delta chain a frame may declare."""

DEPENDENCY_PREFIX: Final = FRAME_HEADER_SIZE + ID_SIZE
"""The bytes of a frame that name a delta frame's base."""

_U64: Final = struct.Struct("<Q")
_CHUNK_ENTRY: Final = struct.Struct("<32sQ")

_CANONICAL_NAN: Final[float] = struct.unpack(
    "<d", struct.pack("<Q", 0x7FF8000000000000)
)[0]
_INT_MIN: Final = -(1 << 63)
_INT_MAX: Final = (1 << 64) - 1
_MIN_SAVING: Final = 0.97
"""Store compressed only when it saves at least 3 percent."""

Value: TypeAlias = (
    None | bool | int | float | str | bytes | Sequence["Value"] | Mapping[str, "Value"]
)
"""A value the canonical encoding accepts."""


@dataclass(frozen=True, order=True, slots=True)
class ObjectId:
    """The id of an object: 32 raw bytes of BLAKE3-256.

    Hex and prefixes exist only at the edges (CLI, file names, JSON).

    Attributes:
        raw: The 32 bytes of the hash.
    """

    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.raw, bytes) or len(self.raw) != ID_SIZE:
            raise InvalidInputError(
                f"an object id is {ID_SIZE} bytes, got {len(self.raw)!r} bytes"
            )

    @property
    def hex(self) -> str:
        """The id as 64 lower-case hex digits."""
        return self.raw.hex()

    def short(self, length: int = 12) -> str:
        """Return the first ``length`` hex digits, for display."""
        return self.raw.hex()[:length]

    @classmethod
    def from_hex(cls, text: str) -> ObjectId:
        """Parse 64 hex digits.

        Args:
            text: The hex form of an id.

        Returns:
            The id.

        Raises:
            InvalidInputError: If ``text`` is not 64 hex digits.
        """
        if len(text) != 2 * ID_SIZE:
            raise InvalidInputError(f"an object id is 64 hex digits, got {text!r}")
        try:
            return cls(bytes.fromhex(text))
        except ValueError as exc:
            raise InvalidInputError(f"an object id is hex, got {text!r}") from exc

    def __str__(self) -> str:
        return self.raw.hex()

    def __repr__(self) -> str:
        return f"ObjectId({self.short()})"


def canonical(value: object) -> Value:
    """Return ``value`` in the one form the canonical encoding writes.

    Maps get their keys sorted by UTF-8 bytes; ``-0.0`` becomes ``0.0``; every
    NaN becomes the one quiet NaN; tuples become lists; ids become their raw
    bytes; NumPy scalars become Python numbers. ``bool``, ``int`` and ``float``
    stay distinct types: ``1`` and ``1.0`` encode differently.

    Args:
        value: A tree of None, bool, int, float, str, bytes, lists, tuples,
            str-keyed dicts and ``ObjectId``s.

    Returns:
        The normalised tree.

    Raises:
        InvalidInputError: If the tree holds another type, a non-str map key, a
            string that is not valid UTF-8, or an int outside 64 bits.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidInputError(f"integer {value} does not fit in 64 bits")
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            return _CANONICAL_NAN
        return 0.0 if value == 0.0 else float(value)
    if isinstance(value, str):
        _check_utf8(value)
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, ObjectId):
        return value.raw
    if isinstance(value, Mapping):
        items: list[tuple[bytes, str, Value]] = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInputError(
                    f"map keys must be strings, got {type(key).__name__} {key!r}"
                )
            items.append((_check_utf8(key), key, canonical(item)))
        items.sort(key=lambda entry: entry[0])
        return {key: item for _, key, item in items}
    if isinstance(value, list | tuple):
        return [canonical(item) for item in value]
    item_method = getattr(value, "item", None)
    if callable(item_method) and getattr(value, "shape", None) == ():
        # NumPy and torch scalars: hash the Python number they hold
        scalar: object = item_method()
        return canonical(scalar)
    raise InvalidInputError(f"cannot encode a value of type {type(value).__name__}")


def _check_utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"string {text!r} is not valid UTF-8") from exc


def encode(value: object) -> bytes:
    """Encode ``value`` canonically as msgpack.

    Args:
        value: See ``canonical``.

    Returns:
        The canonical bytes; equal values always give equal bytes.

    Raises:
        InvalidInputError: If ``value`` cannot be encoded.
    """
    packed: bytes = msgpack.packb(
        canonical(value), use_bin_type=True, use_single_float=False
    )
    return packed


def decode(data: bytes | memoryview, *, object_id: ObjectId | None = None) -> Value:
    """Decode msgpack bytes written by ``encode``.

    Args:
        data: The encoded bytes.
        object_id: The id the bytes belong to, named in errors.

    Returns:
        The decoded tree (maps as dicts, arrays as lists).

    Raises:
        CorruptObjectError: If the bytes are not one complete msgpack value with
            string map keys.
    """
    try:
        value: Value = msgpack.unpackb(
            data, raw=False, strict_map_key=True, use_list=True
        )
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        name = object_id.hex if object_id else None
        raise CorruptObjectError(name, f"bad msgpack ({exc})") from exc
    problem = _foreign_item(value)
    if problem is not None:
        name = object_id.hex if object_id else None
        raise CorruptObjectError(name, f"bad msgpack ({problem})")
    return value


def _foreign_item(value: object) -> str | None:
    # msgpack also yields bytes map keys, extension types and timestamps, which
    # ``encode`` never writes: callers may rely on the types of ``Value`` alone
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            for key in item:
                if not isinstance(key, str):
                    return f"map key of type {type(key).__name__}"
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
        elif item is not None and not isinstance(item, int | float | str | bytes):
            return f"value of type {type(item).__name__}"
    return None


def hash_object(kind: str, payload: bytes | memoryview) -> ObjectId:
    """Compute the id of an object.

    The id is BLAKE3-256 over ``kind``, one space, the payload length in
    decimal, one zero byte, then the payload.

    Args:
        kind: One of ``KINDS``.
        payload: The object's canonical bytes.

    Returns:
        The object's id.

    Raises:
        InvalidInputError: If ``kind`` is unknown.
    """
    if kind not in KINDS:
        raise InvalidInputError(f"unknown object kind {kind!r}")
    hasher = blake3.blake3(f"{kind} {len(payload)}\0".encode("ascii"))
    hasher.update(payload)
    return ObjectId(hasher.digest())


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded stored frame.

    Attributes:
        kind: The object kind.
        payload: The object's canonical bytes, decompressed.
    """

    kind: str
    payload: bytes


FramePart: TypeAlias = bytes | memoryview | Bytes
"""One piece of a frame being written; a frame is the concatenation of its parts."""


class FrameSource(Protocol):
    """Where a frame that names other objects (a delta base, chunks) finds them."""

    def get_framed(self, oid: ObjectId) -> bytes:
        """Return the stored frame of ``oid``, unverified."""
        ...

    def describe(self, oid: ObjectId) -> str:
        """Return where ``oid`` is stored, for messages."""
        ...


@dataclass(frozen=True, slots=True)
class FrameLayout:
    """A parsed frame: its header fields and the parts of its body.

    Only the structure is checked by parsing; content is checked by decoding.

    Attributes:
        kind: The object kind.
        encoding: The encoding code (``ENCODINGS``).
        size: The payload's length in bytes.
        body: The bytes after the header.
        width: Element width of a planes, delta or bits frame (else 1).
        sections: The sections of a planes, delta or bits frame.
        base: The base blob of a delta frame.
        depth: A delta frame's depth (its base's plus one); 0 for the others.
        pattern: The one nonzero element of a bits frame.
        chunks: Chunk ids and lengths of a chunked frame, in order.
    """

    kind: str
    encoding: int
    size: int
    body: memoryview
    width: int = 1
    sections: tuple[Section, ...] = ()
    base: ObjectId | None = None
    depth: int = 0
    pattern: bytes = b""
    chunks: tuple[tuple[ObjectId, int], ...] = ()

    @property
    def dependencies(self) -> list[ObjectId]:
        """The objects this frame needs to be read: its base or its chunks."""
        if self.base is not None:
            return [self.base]
        return [oid for oid, _ in self.chunks]


def frame_header(kind: str, encoding: int, size: int) -> bytes:
    """Return the 16-byte header of a frame.

    Raises:
        InvalidInputError: If ``kind`` or ``encoding`` is unknown, or ``size``
            is above the encoding's limit.
    """
    code = KINDS.get(kind)
    if code is None:
        raise InvalidInputError(f"unknown object kind {kind!r}")
    if encoding not in ENCODINGS:
        raise InvalidInputError(f"unknown frame encoding {encoding}")
    limit = MAX_CHUNKED_SIZE if encoding == ENCODING_CHUNKED else MAX_OBJECT_SIZE
    if size > limit:
        raise InvalidInputError(
            f"object of {size} bytes is above the {limit}-byte limit"
        )
    return _FRAME_HEADER.pack(FRAME_MAGIC, FRAME_VERSION, code, encoding, 0, size)


def frame(kind: str, payload: bytes | memoryview, *, level: int = 3) -> bytes:
    """Wrap an object's bytes in a raw or zstandard frame, compressed when it pays.

    Args:
        kind: One of ``KINDS``.
        payload: The object's canonical bytes.
        level: The zstandard level to try; 0 stores raw without trying.

    Returns:
        The header followed by the raw or compressed payload.

    Raises:
        InvalidInputError: If ``kind`` is unknown or the payload too large.
    """
    size = len(payload)
    header = frame_header(kind, ENCODING_RAW, size)
    if level > 0 and size >= 64:
        packed = zstandard.ZstdCompressor(
            level=level, write_content_size=True
        ).compress(payload)
        if len(packed) < size * _MIN_SAVING:
            return frame_header(kind, ENCODING_ZSTD, size) + packed
    return header + bytes(payload)


def planes_frame(
    data: Bytes,
    width: int,
    *,
    level: int = 1,
    min_saving: float = 0.97,
    into: Bytes | None = None,
    pack: bool = True,
) -> list[FramePart]:
    """Return the parts of a byte-planes frame of blob data (encoding 2).

    Args:
        data: The blob's bytes, elements of ``width`` bytes.
        width: 2, 4 or 8.
        level: The zstandard level for the planes.
        min_saving: A plane is compressed only below this share of its size.
        into: A buffer of at least ``len(data)`` bytes for the planes, which
            the parts may then be views of; a new one when None.
        pack: Sections may be packed (method 2, format 3).

    Raises:
        InvalidInputError: If ``width`` is not allowed or does not divide the
            data.
    """
    _check_width(width, PLANE_WIDTHS, data.size)
    parts: list[FramePart] = [
        frame_header("blob", ENCODING_PLANES, data.size),
        bytes((width,)),
    ]
    for plane in split_planes(data, width, into=into):
        _add_section(parts, plane, level, min_saving, pack)
    return parts


def delta_frame(
    new: Bytes,
    old: Bytes,
    *,
    base: ObjectId,
    depth: int,
    width: int,
    level: int = 1,
    min_saving: float = 0.97,
    into: Bytes | None = None,
    pack: bool = True,
) -> list[FramePart]:
    """Return the parts of a delta frame (encoding 3): ``new`` XOR its base.

    Args:
        new: The blob's bytes.
        old: The base blob's bytes, as long as ``new``.
        base: The base blob's id.
        depth: 1 plus the base's depth (0 unless the base is a delta frame).
        width: The element width the XOR is split into planes by (1, 2, 4, 8).
        level: The zstandard level for the planes.
        min_saving: A plane is compressed only below this share of its size.
        into: As for ``planes_frame``.
        pack: As for ``planes_frame``.

    Raises:
        InvalidInputError: If the lengths differ, the width is not allowed or
            the depth is outside 1 to 255.
    """
    planes = _delta_planes(new, old, depth, width, xor_planes, into)
    return _delta_parts(
        ENCODING_DELTA, planes, new.size, base, depth, width, level, min_saving, pack
    )


def diff_frame(
    new: Bytes,
    old: Bytes,
    *,
    base: ObjectId,
    depth: int,
    width: int,
    level: int = 1,
    min_saving: float = 0.97,
    into: Bytes | None = None,
    pack: bool = True,
) -> list[FramePart]:
    """Return the parts of a difference frame (encoding 6) of ``new`` against ``old``.

    The elements are subtracted as integers of ``width`` bytes, the result is
    zigzag-mapped and split into byte planes (``encodings.diff_planes``).
    Arguments and errors are those of ``delta_frame``.
    """
    planes = _delta_planes(new, old, depth, width, diff_planes, into)
    return _delta_parts(
        ENCODING_DIFF, planes, new.size, base, depth, width, level, min_saving, pack
    )


def _delta_planes(
    new: Bytes,
    old: Bytes,
    depth: int,
    width: int,
    transform: Callable[..., list[Bytes]],
    into: Bytes | None,
) -> list[Bytes]:
    if new.size != old.size:
        raise InvalidInputError(
            f"a delta needs a base of {new.size} bytes, got {old.size}"
        )
    if not 1 <= depth <= MAX_DELTA_DEPTH:
        raise InvalidInputError(f"delta depth {depth} is outside 1 to 255")
    _check_width(width, DELTA_WIDTHS, new.size)
    return transform(new, old, width, into=into)


def _delta_parts(
    encoding: int,
    planes: list[Bytes],
    size: int,
    base: ObjectId,
    depth: int,
    width: int,
    level: int,
    min_saving: float,
    pack: bool,
) -> list[FramePart]:
    parts: list[FramePart] = [
        frame_header("blob", encoding, size),
        base.raw,
        bytes((depth, width)),
    ]
    for plane in planes:
        _add_section(parts, plane, level, min_saving, pack)
    return parts


def bits_frame(
    data: Bytes, width: int, pattern: bytes, *, level: int = 1, pack: bool = True
) -> list[FramePart]:
    """Return the parts of a packed-bits frame (encoding 4).

    Args:
        data: The blob's bytes: every element all zero bytes or ``pattern``.
        width: The element width (1, 2, 4 or 8).
        pattern: The ``width`` bytes of the one nonzero element.
        level: The zstandard level tried on the bitmap.
        pack: As for ``planes_frame``.

    Raises:
        InvalidInputError: If the width is not allowed or the pattern has
            another length.
    """
    _check_width(width, BITS_WIDTHS, data.size)
    if len(pattern) != width:
        raise InvalidInputError(f"a bit pattern of width {width} has {width} bytes")
    parts: list[FramePart] = [
        frame_header("blob", ENCODING_BITS, data.size),
        bytes((width,)) + pattern,
    ]
    _add_section(parts, pack_bits(data, width, pattern), level, _MIN_SAVING, pack)
    return parts


def chunked_frame(size: int, chunks: Sequence[tuple[ObjectId, int]]) -> bytes:
    """Return a chunked frame (encoding 5): the ids and lengths of its chunks.

    Raises:
        InvalidInputError: If there is no chunk, a chunk is empty or too large,
            or the lengths do not add up to ``size``.
    """
    if len(chunks) < 2:
        raise InvalidInputError("a chunked frame needs at least two chunks")
    if any(not 1 <= length <= MAX_OBJECT_SIZE for _, length in chunks):
        raise InvalidInputError("every chunk holds 1 byte to 64 GiB")
    if sum(length for _, length in chunks) != size:
        raise InvalidInputError(f"chunk lengths do not add up to {size} bytes")
    table = b"".join(oid.raw + _U64.pack(length) for oid, length in chunks)
    return frame_header("blob", ENCODING_CHUNKED, size) + _U64.pack(len(chunks)) + table


def join_parts(parts: Sequence[FramePart]) -> bytes:
    """Return the frame made of ``parts`` as one bytes object."""
    return b"".join(
        part.data if isinstance(part, np.ndarray) else part for part in parts
    )


def parts_size(parts: Sequence[FramePart]) -> int:
    """Return the length in bytes of the frame made of ``parts``."""
    return sum(
        part.nbytes if isinstance(part, memoryview | np.ndarray) else len(part)
        for part in parts
    )


def _check_width(width: int, allowed: tuple[int, ...], size: int) -> None:
    if width not in allowed or size % width:
        raise InvalidInputError(
            f"element width {width} is not one of {allowed} or does not divide"
            f" {size} bytes"
        )


def _add_section(
    parts: list[FramePart], data: Bytes, level: int, min_saving: float, pack: bool
) -> None:
    method, stored = compress_section(
        data, level=level, min_saving=min_saving, pack=pack
    )
    size = stored.size if isinstance(stored, np.ndarray) else len(stored)
    parts.append(section_header(method, size))
    parts.append(stored)


def _corrupt_factory(
    object_id: ObjectId | None,
    location: str | Callable[[], str] | None,
    suffix: str = "",
) -> Callable[[str], CorruptObjectError]:
    name = object_id.hex if object_id else None

    def corrupt(reason: str) -> CorruptObjectError:
        where = location() if callable(location) else location
        return CorruptObjectError(name, reason + suffix, location=where)

    return corrupt


def parse_frame(
    data: bytes | memoryview,
    *,
    object_id: ObjectId | None = None,
    location: str | Callable[[], str] | None = None,
) -> FrameLayout:
    """Check a frame's header and the structure of its body.

    Args:
        data: The stored bytes.
        object_id: The id the frame is stored under, named in errors.
        location: Where the bytes came from (or how to find out), for errors.

    Returns:
        The layout; its sections and fields are views into ``data``.

    Raises:
        CorruptObjectError: If the header is malformed or the body does not
            have the structure its encoding requires.
    """
    corrupt = _corrupt_factory(object_id, location)
    kind, encoding, size = _parse_header(data, corrupt)
    body = memoryview(data)[FRAME_HEADER_SIZE:]
    if body.format != "B":
        body = body.cast("B")
    layout = FrameLayout(kind=kind, encoding=encoding, size=size, body=body)

    if encoding == ENCODING_RAW:
        if len(body) != size:
            raise corrupt(f"payload is {len(body)} bytes, header says {size}")
        return layout
    if encoding == ENCODING_ZSTD:
        return layout
    if encoding == ENCODING_CHUNKED:
        return _parse_chunked(layout, corrupt)
    return _parse_sectioned(layout, corrupt)


def _parse_header(
    data: bytes | memoryview, corrupt: Callable[[str], CorruptObjectError]
) -> tuple[str, int, int]:
    if len(data) < FRAME_HEADER_SIZE:
        raise corrupt(f"{len(data)} bytes is shorter than a frame header")
    magic, version, code, encoding, reserved, size = _FRAME_HEADER.unpack_from(data)
    if magic != FRAME_MAGIC:
        raise corrupt("bad frame magic")
    if version != FRAME_VERSION or reserved != 0:
        raise corrupt(f"unknown frame version {version}.{reserved}")
    kind = _KIND_BY_CODE.get(code)
    if kind is None:
        raise corrupt(f"unknown kind code {code}")
    if encoding not in ENCODINGS:
        raise corrupt(f"unknown encoding {encoding}")
    limit = MAX_CHUNKED_SIZE if encoding == ENCODING_CHUNKED else MAX_OBJECT_SIZE
    if size > limit:
        raise corrupt(f"declared size {size} exceeds the limit")
    if encoding >= ENCODING_PLANES and kind != "blob":
        raise corrupt(f"a {kind} cannot use the {ENCODINGS[encoding]} encoding")
    return kind, encoding, size


def _parse_sectioned(
    layout: FrameLayout, corrupt: Callable[[str], CorruptObjectError]
) -> FrameLayout:
    body, size, encoding = layout.body, layout.size, layout.encoding
    base: ObjectId | None = None
    depth = 0
    pattern = b""
    if encoding in DELTA_ENCODINGS:
        if len(body) < ID_SIZE + 2:
            raise corrupt("delta frame is cut short")
        base = ObjectId(bytes(body[:ID_SIZE]))
        depth, width = body[ID_SIZE], body[ID_SIZE + 1]
        offset, count = ID_SIZE + 2, width
        allowed: tuple[int, ...] = DELTA_WIDTHS
        if depth == 0:
            raise corrupt("delta depth is 0")
    else:
        if len(body) < 1:
            raise corrupt(f"{ENCODINGS[encoding]} frame is cut short")
        width = body[0]
        offset = 1
        allowed = PLANE_WIDTHS if encoding == ENCODING_PLANES else BITS_WIDTHS
        count = width if encoding == ENCODING_PLANES else 1
    if width not in allowed or size % width:
        raise corrupt(f"element width {width} does not fit {size} bytes")
    if encoding == ENCODING_BITS:
        if len(body) < offset + width:
            raise corrupt("bits frame is cut short")
        pattern = bytes(body[offset : offset + width])
        offset += width
    sections, end = read_sections(body, offset, count, corrupt)
    if end != len(body):
        raise corrupt(f"{len(body) - end} bytes after the last section")
    # every section must be able to fill its share before anything is allocated
    count_out = size // width
    expected = (count_out + 7) // 8 if encoding == ENCODING_BITS else count_out
    for section in sections:
        check_section_size(section, expected, corrupt)
    return FrameLayout(
        kind=layout.kind,
        encoding=encoding,
        size=size,
        body=body,
        width=width,
        sections=tuple(sections),
        base=base,
        depth=depth,
        pattern=pattern,
    )


def _parse_chunked(
    layout: FrameLayout, corrupt: Callable[[str], CorruptObjectError]
) -> FrameLayout:
    body = layout.body
    if len(body) < _U64.size:
        raise corrupt("chunked frame is cut short")
    (count,) = _U64.unpack_from(body)
    # one chunk would have the blob's own id: a chunked frame has two or more
    if count < 2 or len(body) != _U64.size + count * _CHUNK_ENTRY.size:
        raise corrupt(f"chunk table of {count} entries does not fill the frame")
    chunks: list[tuple[ObjectId, int]] = []
    total = 0
    for index in range(count):
        raw, length = _CHUNK_ENTRY.unpack_from(body, _U64.size + index * 40)
        if not 1 <= length <= MAX_OBJECT_SIZE:
            raise corrupt(f"chunk {index} claims {length} bytes")
        chunks.append((ObjectId(raw), length))
        total += length
    if total != layout.size:
        raise corrupt(f"chunks hold {total} bytes, header says {layout.size}")
    return FrameLayout(
        kind=layout.kind,
        encoding=layout.encoding,
        size=layout.size,
        body=body,
        chunks=tuple(chunks),
    )


def readable_in(data: bytes | memoryview, format_version: int) -> bool:
    """Return whether a repository of ``format_version`` reads this frame.

    Format 1 reads raw and zstandard frames; format 2 also planes, XOR
    deltas, bits and chunked frames, without packed sections; format 3 all.

    Raises:
        CorruptObjectError: If the frame does not parse.
    """
    return format_version >= 3 or _layout_readable_in(parse_frame(data), format_version)


def _layout_readable_in(layout: FrameLayout, format_version: int) -> bool:
    # formats 1 and 2 (format 3 reads every frame)
    if format_version < 2:
        return layout.encoding in (ENCODING_RAW, ENCODING_ZSTD)
    if layout.encoding == ENCODING_DIFF:
        return False
    return all(section.method != SECTION_PACKED for section in layout.sections)


def chain_readable_in(
    data: bytes | memoryview, format_version: int, source: FrameSource
) -> bool:
    """Return whether ``format_version`` reads this frame and its delta chain.

    A delta frame is readable only if every base down its chain is: an XOR
    delta on a difference frame is not, in format 2. The bases are read from
    ``source``.

    Raises:
        CorruptObjectError: If a frame does not parse.
        ObjectNotFoundError: If a base is missing.
    """
    if format_version >= 3:
        return True
    current = data
    for _ in range(MAX_DELTA_DEPTH + 1):
        layout = parse_frame(current)
        if not _layout_readable_in(layout, format_version):
            return False
        if layout.encoding not in DELTA_ENCODINGS or layout.base is None:
            return True
        current = source.get_framed(layout.base)
    return False


def frame_dependencies(data: bytes | memoryview) -> list[ObjectId]:
    """Return the objects a stored frame needs to be read (base or chunks).

    For a delta frame its first ``DEPENDENCY_PREFIX`` bytes suffice; a chunked
    frame must be whole; other frames need nothing.

    Raises:
        CorruptObjectError: If the frame (or its start) does not parse.
    """
    _, encoding, _ = _parse_header(data, _corrupt_factory(None, None))
    if encoding in DELTA_ENCODINGS:
        if len(data) < DEPENDENCY_PREFIX:
            raise CorruptObjectError(None, "delta frame is cut short")
        return [ObjectId(bytes(data[FRAME_HEADER_SIZE:DEPENDENCY_PREFIX]))]
    if encoding == ENCODING_CHUNKED:
        return parse_frame(data).dependencies
    return []


def decode_into(
    oid: ObjectId,
    out: Bytes,
    source: FrameSource,
    *,
    framed: bytes | None = None,
    verify: bool = True,
    chunk: bool = False,
) -> None:
    """Decode the blob ``oid`` into ``out`` and check it hashes back to ``oid``.

    A delta frame's chain of bases and a chunked frame's chunks are read from
    ``source``; the final bytes are verified against ``oid`` (each chunk is
    verified against its own id too). When they do not verify, the chain is
    decoded again level by level to name the damaged object.

    Args:
        oid: The blob's id.
        out: Exactly the blob's length in bytes, written in place.
        source: Where the frame and the objects it names are read.
        framed: The frame of ``oid`` if already read.
        verify: Check the hash (False only where a caller checks it itself).
        chunk: ``oid`` is a chunk of a chunked blob, so it must not be chunked.

    Raises:
        ObjectNotFoundError: If the blob or an object its frame needs is missing.
        CorruptObjectError: If any frame is damaged or the result does not hash
            to its id; the error names the damaged object.
    """
    _decode_blob(oid, out, source, framed, verify=verify, nested=chunk)


def _decode_blob(
    oid: ObjectId,
    out: Bytes,
    source: FrameSource,
    framed: bytes | memoryview | None,
    *,
    verify: bool,
    nested: bool,
) -> None:
    data = framed if framed is not None else _fetch(source, oid)
    layout = parse_frame(data, object_id=oid, location=lambda: source.describe(oid))
    corrupt = _corrupt_factory(oid, lambda: source.describe(oid))
    if layout.kind != "blob":
        raise corrupt(f"expected a blob, found a {layout.kind}")
    if layout.size != out.size:
        raise corrupt(f"holds {layout.size} bytes where {out.size} are needed")
    if layout.encoding == ENCODING_CHUNKED:
        if nested:
            raise corrupt("a chunk is itself chunked")
        offset = 0
        for chunk, length in layout.chunks:
            piece = out[offset : offset + length]
            _decode_blob(chunk, piece, source, None, verify=True, nested=True)
            offset += length
    else:
        _decode_chain(oid, layout, out, source)
    if verify and hash_object("blob", out.data) != oid:
        _name_damaged(oid, layout, out.size, source)
        raise corrupt("content does not hash to its id")


def _fetch(source: FrameSource, oid: ObjectId) -> bytes | memoryview:
    # a store that maps its files hands out views: large frames are not copied
    viewer = getattr(source, "get_frame_view", None)
    if callable(viewer):
        found: bytes | memoryview = viewer(oid)
        return found
    return source.get_framed(oid)


def _decode_chain(
    oid: ObjectId, layout: FrameLayout, out: Bytes, source: FrameSource
) -> None:
    # walk down to the whole frame at the bottom of the chain, decode it into
    # ``out``, then apply each delta on the way back up (XOR and difference
    # frames may be mixed in one chain: the order matters)
    if layout.encoding not in DELTA_ENCODINGS:
        _decode_whole(layout, out, _corrupt_factory(oid, lambda: source.describe(oid)))
        return
    chain: list[tuple[ObjectId, FrameLayout]] = []
    current_id, current = oid, layout
    while current.encoding in DELTA_ENCODINGS:
        corrupt = _chain_corrupt(oid, current_id, source)
        if len(chain) >= MAX_DELTA_DEPTH:
            raise corrupt("the delta chain is longer than 255")
        chain.append((current_id, current))
        base_id = cast(ObjectId, current.base)
        base = parse_frame(
            _fetch(source, base_id),
            object_id=base_id,
            location=lambda base_id=base_id: source.describe(base_id),  # type: ignore[misc]
        )
        if base.kind != "blob" or base.size != current.size:
            raise corrupt(f"delta base {base_id.hex} is not a blob of its size")
        if base.encoding == ENCODING_CHUNKED:
            raise corrupt(f"delta base {base_id.hex} is chunked")
        # the depths are the writers' bound, not checked here: one id may be
        # stored twice with frames of different depths (two writers storing
        # the same new blob at once), and any frame of an id decodes to the
        # same bytes; the length bound above still ends every chain
        current_id, current = base_id, base

    _decode_whole(current, out, _chain_corrupt(oid, current_id, source))
    width = layout.width
    for member_id, member in reversed(chain):
        corrupt = _chain_corrupt(oid, member_id, source)
        if member.width != width:
            raise corrupt(f"delta width {member.width} differs from {width}")
        mode = JOIN_XOR if member.encoding == ENCODING_DELTA else JOIN_ADD
        _join_sections_into(member.sections, width, out, corrupt, mode)


def _chain_corrupt(
    oid: ObjectId, member: ObjectId, source: FrameSource
) -> Callable[[str], CorruptObjectError]:
    return _corrupt_factory(
        member,
        lambda: source.describe(member),
        "" if member == oid else f" (in the delta chain of {oid.hex})",
    )


def _decode_whole(
    layout: FrameLayout, out: Bytes, corrupt: Callable[[str], CorruptObjectError]
) -> None:
    encoding = layout.encoding
    if encoding == ENCODING_RAW:
        np.copyto(out, np.frombuffer(layout.body, dtype=np.uint8))
    elif encoding == ENCODING_ZSTD:
        zstd_decompress_into(layout.body, out, corrupt)
    elif encoding == ENCODING_PLANES:
        _join_sections_into(layout.sections, layout.width, out, corrupt, JOIN_SET)
    elif encoding == ENCODING_BITS:
        count = layout.size // layout.width
        bitmap = section_bytes(layout.sections[0], (count + 7) // 8, corrupt)
        unpack_bits_into(bitmap, layout.width, layout.pattern, out, corrupt)
    else:
        raise corrupt(f"encoding {ENCODINGS[encoding]} cannot be decoded here")


def _join_sections_into(
    sections: Sequence[Section],
    width: int,
    out: Bytes,
    corrupt: Callable[[str], CorruptObjectError],
    mode: int,
) -> None:
    # every plane decoded first (stored ones are views), then one joining pass
    planes = section_planes(sections, out.size // width, corrupt)
    join_planes(planes, width, out, mode)


def _name_damaged(
    oid: ObjectId, layout: FrameLayout, size: int, source: FrameSource
) -> None:
    # the result did not verify: decode the bases of the chain again, bottom
    # up, each checked against its own id, and name the first that fails
    chain: list[ObjectId] = []
    current = layout
    while current.base is not None:
        chain.append(current.base)
        current = parse_frame(source.get_framed(current.base), object_id=current.base)
    scratch = np.empty(size, dtype=np.uint8)
    for member in reversed(chain):
        try:
            _decode_blob(member, scratch, source, None, verify=True, nested=True)
        except CorruptObjectError as exc:
            raise CorruptObjectError(
                exc.object_id,
                f"{exc.reason} (in the delta chain of {oid.hex})",
                location=exc.location,
            ) from exc


def verify_blob(
    data: bytes | memoryview,
    *,
    object_id: ObjectId,
    location: str | None = None,
    source: FrameSource,
) -> None:
    """Check that a stored blob frame decodes to bytes of its id, keeping none.

    A chunked blob is hashed chunk by chunk, so checking it needs one chunk of
    memory, not the whole blob.

    Raises:
        CorruptObjectError: If the frame or a frame it needs is damaged, or the
            content does not hash to ``object_id``; the error names the object.
        ObjectNotFoundError: If a base or chunk is missing.
    """
    layout = parse_frame(data, object_id=object_id, location=location)
    corrupt = _corrupt_factory(object_id, location)
    if layout.kind != "blob":
        raise corrupt(f"expected a blob, found a {layout.kind}")
    if layout.encoding != ENCODING_CHUNKED:
        out = np.empty(layout.size, dtype=np.uint8)
        _decode_blob(object_id, out, source, data, verify=True, nested=False)
        return
    hasher = blake3.blake3(f"blob {layout.size}\0".encode("ascii"))
    for chunk, length in layout.chunks:
        piece = np.empty(length, dtype=np.uint8)
        _decode_blob(chunk, piece, source, None, verify=True, nested=True)
        hasher.update(piece.data)
    if hasher.digest() != object_id.raw:
        raise corrupt("content does not hash to its id")


def unframe(
    data: bytes | memoryview,
    *,
    object_id: ObjectId | None = None,
    location: str | None = None,
    source: FrameSource | None = None,
) -> Frame:
    """Decode a stored frame and verify its content against its id.

    Args:
        data: The stored bytes.
        object_id: The id the frame is stored under; when given, the payload
            must hash back to it.
        location: Where the bytes came from, named in errors.
        source: Where a delta frame's base or a chunked frame's chunks are read;
            needed only for those two encodings.

    Returns:
        The kind and payload.

    Raises:
        CorruptObjectError: If the header or body is malformed, decompression
            fails, or the hash does not match.
        InvalidInputError: If the frame names other objects and no ``source``
            was given.
    """
    layout = parse_frame(data, object_id=object_id, location=location)
    corrupt = _corrupt_factory(object_id, location)
    if layout.encoding == ENCODING_RAW:
        payload = bytes(layout.body)
    elif layout.encoding == ENCODING_ZSTD:
        payload = zstd_decompress(layout.body, layout.size, corrupt)
    elif layout.encoding in DELTA_ENCODINGS or layout.encoding == ENCODING_CHUNKED:
        if source is None or object_id is None:
            raise InvalidInputError(
                f"a {ENCODINGS[layout.encoding]} frame names other objects: read it"
                " with its id through its store"
            )
        # the chunks must exist and hold what the table claims before the
        # whole is allocated: a small damaged table cannot claim terabytes
        for chunk, length in layout.chunks:
            found = parse_frame(source.get_framed(chunk), object_id=chunk)
            if found.size != length:
                raise corrupt(f"chunk {chunk.hex} holds {found.size}, not {length}")
        out = np.empty(layout.size, dtype=np.uint8)
        decode_into(object_id, out, source, framed=bytes(data))
        return Frame(kind=layout.kind, payload=out.tobytes())
    else:
        out = np.empty(layout.size, dtype=np.uint8)
        _decode_whole(layout, out, corrupt)
        payload = out.tobytes()

    if object_id is not None and hash_object(layout.kind, payload) != object_id:
        raise corrupt("content does not hash to its id")
    return Frame(kind=layout.kind, payload=payload)
