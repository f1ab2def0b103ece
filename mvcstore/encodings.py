"""Byte transforms under the storage encodings of tensor data.

This layer owns the arithmetic that the frame encodings of ``codec`` apply to a
blob's bytes before and after zstandard: splitting little-endian elements into
byte planes and joining them back, the XOR of two equally long byte strings,
the zigzag-mapped integer difference of two and its inverse, packing tensors
whose elements are all zero or one single bit pattern into one bit each,
packing bytes below 16 into 1, 2 or 4 bits, the sections (stored, zstandard
or packed) those bytes are kept in, and the per-thread buffers they are made
in. It knows nothing of ids, kinds, objects or stores; ``docs/format.md``
section 5 gives every byte.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Final, TypeAlias

import numpy as np
import numpy.typing as npt
import zstandard

import mvcstore.native as native
from mvcstore.errors import CorruptObjectError

__all__ = [
    "Bytes",
    "PLANE_WIDTHS",
    "DELTA_WIDTHS",
    "BITS_WIDTHS",
    "SECTION_STORED",
    "SECTION_ZSTD",
    "SECTION_PACKED",
    "pack_small",
    "unpack_small",
    "SECTION_HEADER_SIZE",
    "Section",
    "plane_width",
    "as_bytes",
    "split_planes",
    "xor_planes",
    "diff_planes",
    "scratch",
    "add_zigzag_into",
    "join_planes_into",
    "xor_planes_into",
    "JOIN_SET",
    "JOIN_XOR",
    "JOIN_ADD",
    "join_planes",
    "section_planes",
    "compiled_kernels",
    "find_bit_pattern",
    "pack_bits",
    "unpack_bits_into",
    "compress_section",
    "section_header",
    "read_sections",
    "check_section_size",
    "section_bytes",
    "zstd_decompress",
    "zstd_decompress_into",
]

Bytes: TypeAlias = npt.NDArray[np.uint8]
"""A one-dimensional array of bytes."""

PLANE_WIDTHS: Final = (2, 4, 8)
"""Element widths a byte-plane frame may declare."""

DELTA_WIDTHS: Final = (1, 2, 4, 8)
"""Element widths a delta frame may declare (1: no planes)."""

BITS_WIDTHS: Final = (1, 2, 4, 8)
"""Element widths a packed-bits frame may declare."""

SECTION_STORED: Final = 0
SECTION_ZSTD: Final = 1
SECTION_PACKED: Final = 2
"""Bytes all below 16, packed 8, 4 or 2 to a byte (1, 2 or 4 bits), then zstd."""
_PACK_BITS: Final = (1, 2, 4)
_PACK_BELOW: Final = 20
"""Sections whose sample compresses less than this many times are packed."""
_SECTION: Final = struct.Struct("<BQ")
SECTION_HEADER_SIZE: Final = _SECTION.size

_SAMPLE_FROM: Final = 64 << 10
"""Sections from this size on are sampled before compressing them whole."""
_SAMPLE_PIECE: Final = 8 << 10
"""The most bytes of each of the three sampled pieces (start, middle, end)."""
_UINT_BY_WIDTH: Final[dict[int, type[np.unsignedinteger]]] = {
    1: np.uint8,
    2: np.uint16,
    4: np.uint32,
    8: np.uint64,
}

_INT_BY_WIDTH: Final[dict[int, type[np.signedinteger]]] = {
    1: np.int8,
    2: np.int16,
    4: np.int32,
    8: np.int64,
}
_STEP: Final = 1 << 16
"""Elements per step of the word-wise transforms: the step's buffers stay in cache."""

_local = threading.local()

# the fused loops in C (mvcstore/_kernels.c) do in one pass and without the
# GIL what the NumPy code below does in several; the NumPy code stays the
# reference, and runs where the module was not built or is turned off
_kernels: ModuleType | None = native.kernels

_SPLIT_PLAIN: Final = 0
_SPLIT_XOR: Final = 1
_SPLIT_DIFF: Final = 2
JOIN_SET: Final = 0
"""``join_planes``: the elements become the joined planes."""
JOIN_XOR: Final = 1
"""``join_planes``: the joined planes are XORed into the elements."""
JOIN_ADD: Final = 2
"""``join_planes``: the difference whose zigzag the planes hold is added."""


def compiled_kernels() -> bool:
    """Return True when the fused C loops are in use (see ``MVCSTORE_NO_KERNELS``)."""
    return _kernels is not None


def _compressor(level: int) -> zstandard.ZstdCompressor:
    # a compressor is not safe to share between threads: one per thread and level
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(
        _local, "compressors", None
    )
    if cache is None:
        cache = {}
        _local.compressors = cache
    found = cache.get(level)
    if found is None:
        if level == 1:
            # planes are noise plus skewed bytes: longer minimum matches and a
            # tiny table compress them better than level 1, and faster
            params = zstandard.ZstdCompressionParameters(
                window_log=17,
                hash_log=6,
                chain_log=6,
                search_log=1,
                min_match=7,
                target_length=0,
                strategy=zstandard.STRATEGY_FAST,
                write_content_size=True,
            )
            found = zstandard.ZstdCompressor(compression_params=params)
        else:
            found = zstandard.ZstdCompressor(level=level, write_content_size=True)
        cache[level] = found
    return found


def plane_width(dtype_size: int) -> int:
    """Return the plane width for elements of ``dtype_size`` bytes.

    Complex elements split as their two real parts; a 1-byte element has no
    planes (width 1).
    """
    return 8 if dtype_size == 16 else dtype_size


def as_bytes(data: Bytes | memoryview | bytes) -> Bytes:
    """Return ``data`` as a one-dimensional uint8 array, without copying."""
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8)
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return np.frombuffer(view, dtype=np.uint8)


def split_planes(data: Bytes, width: int, *, into: Bytes | None = None) -> list[Bytes]:
    """Return the byte planes of ``data``: every element's byte 0, then byte 1...

    Args:
        data: Little-endian elements of ``width`` bytes.
        width: The element width; 1 returns ``data`` itself.
        into: Where to put the planes (``len(data)`` bytes or more); a new
            buffer when None.

    Returns:
        ``width`` contiguous arrays of ``len(data) // width`` bytes.
    """
    if width == 1:
        return [data]
    if _kernels is not None:
        return _fused_split(_kernels, data, None, width, into, _SPLIT_PLAIN)
    kind = _UINT_BY_WIDTH[width]
    values: npt.NDArray[np.unsignedinteger] = data.view(kind)
    out = _planes_buffer(into, width, values.size)
    scratch: npt.NDArray[np.unsignedinteger] = np.empty(
        min(_STEP, values.size), dtype=kind
    )
    for start in range(0, values.size, _STEP):
        _split_step(values[start : start + _STEP], out, start, scratch)
    return list(out)


def _split_step(
    values: npt.NDArray[np.unsignedinteger],
    out: Bytes,
    start: int,
    scratch: npt.NDArray[np.unsignedinteger],
) -> None:
    # shifting and narrowing runs on whole words: faster than a byte transpose
    end = start + values.size
    shifted = scratch[: values.size]
    np.copyto(out[0, start:end], values, casting="unsafe")
    for plane in range(1, out.shape[0]):
        np.right_shift(values, 8 * plane, out=shifted)
        np.copyto(out[plane, start:end], shifted, casting="unsafe")


def xor_planes(
    new: Bytes, old: Bytes, width: int, *, into: Bytes | None = None
) -> list[Bytes]:
    """Return the byte planes of ``new XOR old`` without making the XOR first.

    ``into`` is as for ``split_planes``.
    """
    if _kernels is not None:
        return _fused_split(_kernels, new, old, width, into, _SPLIT_XOR)
    out = _planes_buffer(into, width, new.size // width)
    if width == 1:
        return [np.bitwise_xor(new, old, out=out[0])]
    a, b = new.reshape(-1, width), old.reshape(-1, width)
    for plane in range(width):
        np.bitwise_xor(a[:, plane], b[:, plane], out=out[plane])
    return list(out)


def diff_planes(
    new: Bytes, old: Bytes, width: int, *, into: Bytes | None = None
) -> list[Bytes]:
    """Return the byte planes of the zigzag-mapped difference ``new - old``.

    Elements are read as little-endian two's-complement integers of ``width``
    bytes; the difference wraps around, and zigzag maps it to an unsigned
    integer that is small when the difference is near zero (0, -1, 1, -2...
    become 0, 1, 2, 3...), so the high planes of a small update are zeros.

    Args:
        new: The blob's bytes.
        old: The base's bytes, as long as ``new``.
        width: The element width: 1, 2, 4 or 8.
        into: As for ``split_planes``.

    Returns:
        ``width`` contiguous arrays of ``len(new) // width`` bytes.
    """
    if _kernels is not None:
        return _fused_split(_kernels, new, old, width, into, _SPLIT_DIFF)
    kind = _INT_BY_WIDTH[width]
    a, b = new.view(kind), old.view(kind)
    count = a.size
    out = _planes_buffer(into, width, count)
    step = min(_STEP, count)
    diff = np.empty(step, dtype=kind)
    sign = np.empty(step, dtype=kind)
    shifted = np.empty(step, dtype=_UINT_BY_WIDTH[width])
    top = 8 * width - 1
    for start in range(0, count, _STEP):
        end = min(start + _STEP, count)
        d, s = diff[: end - start], sign[: end - start]
        np.subtract(a[start:end], b[start:end], out=d)
        np.right_shift(d, top, out=s)
        np.left_shift(d, 1, out=d)
        np.bitwise_xor(d, s, out=d)
        _split_step(d.view(shifted.dtype), out, start, shifted)
    return list(out)


def _fused_split(
    kernels: ModuleType,
    new: Bytes,
    old: Bytes | None,
    width: int,
    into: Bytes | None,
    mode: int,
) -> list[Bytes]:
    # the C loop of split_planes, xor_planes or diff_planes
    out = _planes_buffer(into, width, new.size // width)
    base = None if old is None else _contiguous(old)
    kernels.split(_contiguous(new), base, width, out, mode)
    return list(out)


def _contiguous(data: Bytes) -> Bytes:
    # the C loops read plain buffers; a strided view is copied first
    return np.ascontiguousarray(data)


def _planes_buffer(into: Bytes | None, width: int, count: int) -> Bytes:
    if into is None:
        return np.empty((width, count), dtype=np.uint8)
    if into.size < width * count:
        raise ValueError(f"a buffer of {into.size} bytes cannot hold {width * count}")
    return into[: width * count].reshape(width, count)


def scratch(name: str, size: int) -> Bytes:
    """Return ``size`` bytes of a buffer this thread keeps under ``name``.

    The buffer grows as needed and is reused by the thread's next call with
    the same name, so the caller must be done with it by then. Reusing memory
    spares the page faults that a fresh buffer of every tensor costs.
    """
    buffers: dict[str, Bytes] | None = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = {}
        _local.buffers = buffers
    buffer = buffers.get(name)
    if buffer is None or buffer.size < size:
        buffer = np.empty(max(size, 1 << 16), dtype=np.uint8)
        buffers[name] = buffer
    return buffer[:size]


def join_planes(planes: Sequence[Bytes], width: int, out: Bytes, mode: int) -> None:
    """Join byte planes into the little-endian elements of ``out``.

    Args:
        planes: ``width`` arrays of ``len(out) // width`` bytes.
        width: The element width: 1, 2, 4 or 8.
        out: The elements, written in place.
        mode: ``JOIN_SET`` (the elements become the joined planes),
            ``JOIN_XOR`` (XORed into them) or ``JOIN_ADD`` (the planes hold
            zigzag-mapped differences, added with wraparound: the inverse of
            ``diff_planes``).
    """
    if _kernels is not None:
        _kernels.join([_contiguous(p) for p in planes], width, out, mode)
    elif mode == JOIN_SET:
        join_planes_into(planes, width, out)
    elif mode == JOIN_XOR:
        xor_planes_into(planes, width, out)
    else:
        joined = scratch("joined", out.size)
        join_planes_into(planes, width, joined)
        add_zigzag_into(joined, width, out)


def join_planes_into(planes: Sequence[Bytes], width: int, out: Bytes) -> None:
    """Write byte planes back into little-endian elements in ``out``."""
    if width == 1:
        np.copyto(out, planes[0])
        return
    grid = out.reshape(-1, width)
    for plane, values in enumerate(planes):
        grid[:, plane] = values


def xor_planes_into(planes: Sequence[Bytes], width: int, out: Bytes) -> None:
    """XOR byte planes into the little-endian elements held in ``out``."""
    if width == 1:
        np.bitwise_xor(out, planes[0], out=out)
        return
    grid = out.reshape(-1, width)
    for plane, values in enumerate(planes):
        column = grid[:, plane]
        np.bitwise_xor(column, values, out=column)


def add_zigzag_into(mapped: Bytes, width: int, out: Bytes) -> None:
    """Add zigzag-mapped differences to the elements of ``out``, wrapping.

    The inverse of ``diff_planes`` once its planes are joined: ``mapped``
    holds the joined elements and is overwritten with the differences.
    """
    kind = _UINT_BY_WIDTH[width]
    values, target = mapped.view(kind), out.view(kind)
    step = min(_STEP, values.size)
    low = np.empty(step, dtype=kind)
    for start in range(0, values.size, _STEP):
        end = min(start + _STEP, values.size)
        z, bit = values[start:end], low[: end - start]
        np.bitwise_and(z, 1, out=bit)
        np.subtract(0, bit, out=bit)
        np.right_shift(z, 1, out=z)
        np.bitwise_xor(z, bit, out=z)
        np.add(target[start:end], z, out=target[start:end])


def find_bit_pattern(data: Bytes, width: int) -> bytes | None:
    """Return P if every element of ``data`` is all zero bytes or the pattern P.

    A tensor of zeros gives ``width`` zero bytes. Widths other than 1, 2, 4
    and 8, and data with three or more distinct elements, give None. The
    first 64, then 4096 elements are checked first, so most data is refused
    cheaply.

    Args:
        data: Elements of ``width`` bytes.
        width: The element width.
    """
    kind = _UINT_BY_WIDTH.get(width)
    if kind is None or data.size == 0 or data.size % width:
        return None
    values = data.view(kind)
    # most tensors are refused by their first elements: two distinct nonzero
    first = values[:64]
    nonzero = first[first != 0]
    if nonzero.size > 1 and not np.all(nonzero == nonzero[0]):
        return None
    head = values[:4096]
    found = np.flatnonzero(head)
    if found.size == 0:
        found = np.flatnonzero(values)
        if found.size == 0:
            return bytes(width)
    pattern = values[found[0]]
    for probe in (values[:64], head, values):
        if not np.all((probe == 0) | (probe == pattern)):
            return None
    return values[found[0] : found[0] + 1].tobytes()


def pack_bits(data: Bytes, width: int, pattern: bytes) -> Bytes:
    """Return one bit per element: 1 where the element equals ``pattern``.

    Bits are packed least significant first; the last byte is padded with 0.
    """
    values = data.view(_UINT_BY_WIDTH[width])
    target = np.frombuffer(pattern, dtype=_UINT_BY_WIDTH[width])[0]
    if not target:
        return np.zeros((values.size + 7) // 8, dtype=np.uint8)
    packed: Bytes = np.packbits(values == target, bitorder="little")
    return packed


def unpack_bits_into(
    bitmap: Bytes,
    width: int,
    pattern: bytes,
    out: Bytes,
    corrupt: Callable[[str], CorruptObjectError],
) -> None:
    """Write ``pattern`` where a bit is 1 and zero bytes where it is 0.

    Raises:
        CorruptObjectError: If a padding bit of the last byte is set.
    """
    count = out.size // width
    if count % 8 and int(bitmap[-1]) >> (count % 8):
        raise corrupt("padding bits of the bitmap are set")
    bits = np.unpackbits(bitmap, bitorder="little", count=count)
    kind = _UINT_BY_WIDTH[width]
    values = out.view(kind)
    target = np.frombuffer(pattern, dtype=kind)[0]
    np.multiply(bits, target, out=values, casting="unsafe")


@dataclass(frozen=True, slots=True)
class Section:
    """One stored run of bytes inside a frame body.

    Attributes:
        method: ``SECTION_STORED``, ``SECTION_ZSTD`` or ``SECTION_PACKED``.
        body: The stored bytes (the bytes themselves, one zstandard frame, or
            a bit width and one zstandard frame of the packed bytes).
    """

    method: int
    body: memoryview


def pack_small(data: Bytes, bits: int) -> Bytes:
    """Pack bytes below ``2**bits`` into ``8 // bits`` per byte.

    Byte ``i`` goes to bits ``bits * (i % per)`` and up of packed byte
    ``i // per`` (least significant first, ``per = 8 // bits``); the last
    packed byte is padded with zeros.
    """
    if _kernels is not None:
        result = np.empty(-(-data.size * bits // 8), dtype=np.uint8)
        _kernels.pack(_contiguous(data), bits, result)
        return result
    if bits == 1:
        packed: Bytes = np.packbits(data, bitorder="little")
        return packed
    per = 8 // bits
    whole = data.size // per * per
    out = np.empty(-(-data.size // per), dtype=np.uint8)
    head = out[: whole // per]
    np.copyto(head, data[0:whole:per])
    shifted = np.empty(head.size, dtype=np.uint8)
    for index in range(1, per):
        np.left_shift(data[index:whole:per], bits * index, out=shifted)
        np.bitwise_or(head, shifted, out=head)
    if whole < data.size:
        last = 0
        for index, value in enumerate(data[whole:].tolist()):
            last |= value << (bits * index)
        out[-1] = last
    return out


def _spread_table() -> npt.NDArray[np.uint32]:
    # a byte of four 2-bit values, spread to the four bytes of a word
    byte = np.arange(256, dtype=np.uint32)
    table = np.zeros(256, dtype=np.uint32)
    for index in range(4):
        table |= ((byte >> (2 * index)) & 3) << (8 * index)
    return table


_SPREAD_2: Final = _spread_table()


def unpack_small(packed: Bytes, bits: int, out: Bytes) -> None:
    """Undo ``pack_small`` into ``out``, whose length is the unpacked length."""
    if _kernels is not None:
        _kernels.unpack(_contiguous(packed), bits, out)
        return
    if bits == 1:
        np.copyto(out, np.unpackbits(packed, bitorder="little", count=out.size))
        return
    per = 8 // bits
    mask = (1 << bits) - 1
    whole = out.size // per * per
    head = packed[: whole // per]
    if bits == 2:
        np.take(_SPREAD_2, head, out=out[:whole].view(np.uint32))
    else:
        words = out[:whole].view(np.uint16)
        high = head.astype(np.uint16)
        np.bitwise_and(high, 0xF, out=words)
        np.right_shift(high, 4, out=high)
        np.left_shift(high, 8, out=high)
        np.bitwise_or(words, high, out=words)
    if whole < out.size:
        last = int(packed[-1])
        for index in range(out.size - whole):
            out[whole + index] = (last >> (bits * index)) & mask


def compress_section(
    data: Bytes, *, level: int = 1, min_saving: float = 0.97, pack: bool = True
) -> tuple[int, Bytes | bytes]:
    """Compress ``data`` with zstandard when that saves enough.

    Sections of 64 KiB or more are sampled first (three pieces of up to 32 KiB
    from the start, middle and end): when the sample does not compress, the
    whole is stored without trying; when every byte is below 16, the bytes are
    packed (``pack_small``) before zstandard.

    Args:
        data: The bytes.
        level: The zstandard level.
        min_saving: Keep the compressed form only below this share of the size.
        pack: Small values may be packed (``SECTION_PACKED``, format 3).

    Returns:
        The method and the bytes to store.
    """
    size = data.size
    if size < 64:
        return SECTION_STORED, data
    if size >= _SAMPLE_FROM:
        piece = min(_SAMPLE_PIECE, size // 8)
        middle = size // 2
        sample = np.concatenate(
            (data[:piece], data[middle : middle + piece], data[size - piece :])
        )
        packed_sample = _compressor(level).compress(sample.data)
        if len(packed_sample) >= sample.size * min_saving:
            return SECTION_STORED, data
        # small values only, not mostly zeros (a high plane of a delta some
        # epochs from its base): packed first, zstandard codes them tighter
        # and two to four times faster; mostly zeros it codes fast as they are
        top = 16
        if pack and len(packed_sample) * _PACK_BELOW > sample.size:
            top = int(data.max())
        if top < 16:
            bits = next(b for b in _PACK_BITS if top < 1 << b)
            body = bytes((bits,)) + _compressor(level).compress(
                pack_small(data, bits).data
            )
            if len(body) < size * min_saving:
                return SECTION_PACKED, body
            return SECTION_STORED, data
    packed = _compressor(level).compress(data.data)
    if len(packed) < size * min_saving:
        return SECTION_ZSTD, packed
    return SECTION_STORED, data


def section_header(method: int, stored_size: int) -> bytes:
    """Return the 9 bytes that open a section."""
    return _SECTION.pack(method, stored_size)


def read_sections(
    body: memoryview,
    offset: int,
    count: int,
    corrupt: Callable[[str], CorruptObjectError],
) -> tuple[list[Section], int]:
    """Parse ``count`` sections from ``body`` starting at ``offset``.

    Returns:
        The sections and the offset just after the last one.

    Raises:
        CorruptObjectError: If a section header is cut short, names an unknown
            method, or claims more bytes than the body holds.
    """
    out: list[Section] = []
    for _ in range(count):
        if offset + SECTION_HEADER_SIZE > len(body):
            raise corrupt("a section header is cut short")
        method, stored = _SECTION.unpack_from(body, offset)
        offset += SECTION_HEADER_SIZE
        if method not in (SECTION_STORED, SECTION_ZSTD, SECTION_PACKED):
            raise corrupt(f"unknown section method {method}")
        if stored > len(body) - offset:
            raise corrupt(f"a section claims {stored} bytes past the end of the frame")
        out.append(Section(method, body[offset : offset + stored]))
        offset += stored
    return out, offset


def check_section_size(
    section: Section, length: int, corrupt: Callable[[str], CorruptObjectError]
) -> None:
    """Check that a section holds ``length`` bytes, without decoding it.

    Raises:
        CorruptObjectError: If a stored section has another length, or a
            zstandard frame is bad or declares another size.
    """
    if section.method == SECTION_STORED:
        _check_stored(section, length, corrupt)
        return
    body = section.body
    if section.method == SECTION_PACKED:
        bits, body, length = _packed_parts(section, length, corrupt)
    declared = _content_size(body, corrupt)
    if declared != length:
        raise corrupt(f"a compressed section declares {declared} bytes, not {length}")


def section_bytes(
    section: Section,
    length: int,
    corrupt: Callable[[str], CorruptObjectError],
    *,
    into: Bytes | None = None,
) -> Bytes:
    """Return a section's ``length`` bytes: a view when stored, else decoded.

    A decoded section lands in ``into`` (``length`` bytes) when given, else
    in a buffer of the calling thread, reused by its next call: use the result
    before decoding another section.

    Raises:
        CorruptObjectError: If the stored length is wrong or the zstandard
            frame is bad, declares another size, or has bytes after it.
    """
    if section.method == SECTION_STORED:
        _check_stored(section, length, corrupt)
        return np.frombuffer(section.body, dtype=np.uint8)
    out = scratch("section", length) if into is None else into
    if section.method == SECTION_PACKED:
        bits, body, packed_length = _packed_parts(section, length, corrupt)
        packed = scratch("packed", packed_length)
        zstd_decompress_into(body, packed, corrupt)
        unpack_small(packed, bits, out)
        return out
    zstd_decompress_into(section.body, out, corrupt)
    return out


def section_planes(
    sections: Sequence[Section],
    count: int,
    corrupt: Callable[[str], CorruptObjectError],
) -> list[Bytes]:
    """Return the planes of ``count`` bytes that ``sections`` hold.

    Stored sections come back as views; the others are decoded into one
    buffer of the calling thread, reused by its next call.

    Raises:
        CorruptObjectError: As ``section_bytes``.
    """
    buffer = scratch("planes", count * len(sections))
    return [
        section_bytes(
            section, count, corrupt, into=buffer[index * count : (index + 1) * count]
        )
        for index, section in enumerate(sections)
    ]


def _check_stored(
    section: Section, length: int, corrupt: Callable[[str], CorruptObjectError]
) -> None:
    if len(section.body) != length:
        raise corrupt(f"a stored section is {len(section.body)} bytes, not {length}")


def _content_size(
    body: memoryview, corrupt: Callable[[str], CorruptObjectError]
) -> int:
    # the size a zstandard frame declares, read before anything is allocated
    try:
        declared: int = zstandard.frame_content_size(body)
    except zstandard.ZstdError as exc:
        raise corrupt(f"bad zstandard frame ({exc})") from exc
    return declared


def _packed_parts(
    section: Section, length: int, corrupt: Callable[[str], CorruptObjectError]
) -> tuple[int, memoryview, int]:
    # a packed section: its bit width, its zstandard frame, the packed length
    if len(section.body) < 1 or section.body[0] not in _PACK_BITS:
        raise corrupt("a packed section has no valid bit width")
    bits = section.body[0]
    return bits, section.body[1:], -(-length // (8 // bits))


def zstd_decompress_into(
    body: memoryview, out: Bytes, corrupt: Callable[[str], CorruptObjectError]
) -> None:
    """Decompress exactly one zstandard frame of exactly ``len(out)`` bytes.

    The output goes straight into ``out``, so a damaged frame can never write
    past it.

    Raises:
        CorruptObjectError: If the frame is bad, declares another size, is
            cut short or is followed by more bytes.
    """
    size = out.size
    declared = _content_size(body, corrupt)
    if declared != size:
        raise corrupt(f"compressed frame declares {declared} bytes, header says {size}")
    view = out.data
    done = 0
    try:
        with _decompressor().stream_reader(body, read_across_frames=True) as reader:
            while done < size:
                got = reader.readinto(view[done:])
                if not got:
                    raise corrupt("compressed frame is truncated")
                done += got
            # one frame exactly: bytes after it would pass the hash unnoticed
            if reader.read(1):
                raise corrupt("bytes after the frame")
    except zstandard.ZstdError as exc:
        raise corrupt(f"bad zstandard data ({exc})") from exc


def _decompressor() -> zstandard.ZstdDecompressor:
    found: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if found is None:
        found = zstandard.ZstdDecompressor()
        _local.decompressor = found
    return found


def zstd_decompress(
    body: memoryview, size: int, corrupt: Callable[[str], CorruptObjectError]
) -> bytes:
    """Decompress exactly one zstandard frame of exactly ``size`` bytes.

    The declared content size bounds the output, so a damaged frame cannot
    make the reader allocate more than ``size``.

    Raises:
        CorruptObjectError: On any deviation.
    """
    declared = _content_size(body, corrupt)
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
