"""Canonical encoding, object ids and the storage framing of objects.

This layer owns the exact bytes behind every id: canonical msgpack (one encoding
per value), the BLAKE3-256 id over a kind tag plus those bytes, and the frame an
object is stored in (header, optional zstandard compression). It knows nothing of
what objects mean, and nothing of where they are stored. ``docs/format.md``
describes every byte written here.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

import blake3
import msgpack
import zstandard

from mvcstore.errors import CorruptObjectError, InvalidInputError

__all__ = [
    "ID_SIZE",
    "KINDS",
    "FRAME_MAGIC",
    "FRAME_HEADER_SIZE",
    "MAX_OBJECT_SIZE",
    "Value",
    "ObjectId",
    "canonical",
    "encode",
    "decode",
    "hash_object",
    "Frame",
    "frame",
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
_ENCODINGS: Final = (ENCODING_RAW, ENCODING_ZSTD)

MAX_OBJECT_SIZE: Final = 1 << 36
"""Largest logical size a frame may declare (64 GiB); larger claims are corrupt."""

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


def frame(kind: str, payload: bytes | memoryview, *, level: int = 3) -> bytes:
    """Wrap an object's bytes in the stored frame, compressed when it pays.

    Args:
        kind: One of ``KINDS``.
        payload: The object's canonical bytes.
        level: The zstandard level to try; 0 stores raw without trying.

    Returns:
        The header followed by the raw or compressed payload.

    Raises:
        InvalidInputError: If ``kind`` is unknown.
    """
    code = KINDS.get(kind)
    if code is None:
        raise InvalidInputError(f"unknown object kind {kind!r}")
    size = len(payload)
    if size > MAX_OBJECT_SIZE:
        raise InvalidInputError(
            f"object of {size} bytes is above the {MAX_OBJECT_SIZE}-byte limit"
        )
    body: bytes | memoryview = payload
    encoding = ENCODING_RAW
    if level > 0 and size >= 64:
        packed = zstandard.ZstdCompressor(
            level=level, write_content_size=True
        ).compress(payload)
        if len(packed) < size * _MIN_SAVING:
            body, encoding = packed, ENCODING_ZSTD
    header = _FRAME_HEADER.pack(FRAME_MAGIC, FRAME_VERSION, code, encoding, 0, size)
    return header + bytes(body)


def unframe(
    data: bytes | memoryview,
    *,
    object_id: ObjectId | None = None,
    location: str | None = None,
) -> Frame:
    """Decode a stored frame and verify its content against its id.

    Args:
        data: The stored bytes.
        object_id: The id the frame is stored under; when given, the payload
            must hash back to it.
        location: Where the bytes came from, named in errors.

    Returns:
        The kind and payload.

    Raises:
        CorruptObjectError: If the header is malformed, the size or encoding is
            impossible, decompression fails, or the hash does not match.
    """
    name = object_id.hex if object_id else None

    def corrupt(reason: str) -> CorruptObjectError:
        return CorruptObjectError(name, reason, location=location)

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
    if encoding not in _ENCODINGS:
        raise corrupt(f"unknown encoding {encoding}")
    if size > MAX_OBJECT_SIZE:
        raise corrupt(f"declared size {size} exceeds the limit")
    body = memoryview(data)[FRAME_HEADER_SIZE:]

    if encoding == ENCODING_RAW:
        if len(body) != size:
            raise corrupt(f"payload is {len(body)} bytes, header says {size}")
        payload = bytes(body)
    else:
        payload = _decompress(body, size, corrupt)

    if object_id is not None and hash_object(kind, payload) != object_id:
        raise corrupt("content does not hash to its id")
    return Frame(kind=kind, payload=payload)


def _decompress(
    body: memoryview, size: int, corrupt: Callable[[str], CorruptObjectError]
) -> bytes:
    # the header's size bounds the output: a frame cannot make us allocate more
    try:
        declared = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise corrupt(f"bad zstandard frame ({exc})") from exc
    if declared != size:
        raise corrupt(f"compressed frame declares {declared} bytes, header says {size}")
    # one frame exactly: bytes after it would pass the hash check unnoticed
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    try:
        payload: bytes = decompressor.decompress(body)
    except zstandard.ZstdError as exc:
        raise corrupt(f"bad zstandard data ({exc})") from exc
    if not decompressor.eof:
        raise corrupt("compressed frame is truncated")
    if decompressor.unused_data:
        raise corrupt(f"{len(decompressor.unused_data)} bytes after the frame")
    if len(payload) != size:
        raise corrupt(f"payload is {len(payload)} bytes, header says {size}")
    return payload
